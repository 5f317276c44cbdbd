//! Who a request speaks for: the role and tenant its API key grants, and
//! the checks every handler applies with them.

use hyper::Method;

use super::error::ApiError;

pub use crate::roles::Role;

/// The role a route needs by its method alone: reading needs `read`,
/// anything that may change state needs `write`.
pub fn role_for_method(method: &Method) -> Role {
    if matches!(*method, Method::GET | Method::HEAD) {
        Role::Read
    } else {
        Role::Write
    }
}

/// The grant of the key a request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub role: Role,
    /// `Some`: the key sees and changes this tenant's objects only.
    pub tenant: Option<String>,
}

impl Access {
    /// What an unscoped admin key, or an API without keys on loopback, grants.
    pub fn admin() -> Access {
        Access {
            role: Role::Admin,
            tenant: None,
        }
    }

    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this key's role `{}` does not allow this; it needs `{}`",
                self.role.as_str(),
                needed.as_str()
            )))
        }
    }

    /// Backups and key management: an admin key that is not confined to a
    /// tenant, as those routes reach every tenant's data and grants.
    pub fn require_unscoped_admin(&self) -> Result<(), ApiError> {
        self.require(Role::Admin)?;
        match &self.tenant {
            None => Ok(()),
            Some(own) => Err(ApiError::forbidden(format!(
                "this key is confined to tenant `{own}`; this route needs an admin key for every tenant"
            ))),
        }
    }

    /// Whether an object of `tenant` exists for this key. Handlers answer
    /// 404 for one it does not see, exactly as for a missing one, so ids of
    /// other tenants cannot be probed.
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        match &self.tenant {
            None => true,
            Some(own) => tenant == Some(own.as_str()),
        }
    }

    /// The tenant a new object is created for: a tenant key's own by
    /// default; naming another tenant, or none, is forbidden to it.
    pub fn tenant_for_write(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        match (&self.tenant, requested) {
            (None, requested) => Ok(requested),
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(named)) if *own == named => Ok(Some(named)),
            (Some(own), Some(named)) => Err(ApiError::forbidden(format!(
                "this key belongs to tenant `{own}` and cannot act for tenant `{named}`"
            ))
            .with_field("tenant")),
        }
    }

    /// The tenant a `?tenant=` parameter confines a list or query to: a
    /// well-formed name this key may use. A tenant key is confined to its
    /// own whether it names it or not; naming another is forbidden to it.
    pub fn tenant_param(&self, value: Option<String>) -> Result<Option<String>, ApiError> {
        if value
            .as_deref()
            .is_some_and(|t| !crate::names::is_valid_tenant(t))
        {
            return Err(ApiError::invalid_query(
                "tenant",
                "must match ^[A-Za-z0-9_.:-]{1,128}$",
            ));
        }
        self.tenant_for_write(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant_key(role: Role, tenant: &str) -> Access {
        Access {
            role,
            tenant: Some(tenant.to_owned()),
        }
    }

    #[test]
    fn roles_include_the_ones_below() {
        let read = tenant_key(Role::Read, "a");
        assert!(read.require(Role::Read).is_ok());
        assert_eq!(read.require(Role::Write).unwrap_err().status, 403);
        assert!(tenant_key(Role::Write, "a").require(Role::Read).is_ok());
        assert!(tenant_key(Role::Write, "a").require(Role::Admin).is_err());
        assert!(Access::admin().require(Role::Admin).is_ok());
        assert!(Access::admin().require_unscoped_admin().is_ok());
        let tenant_admin = tenant_key(Role::Admin, "a");
        assert_eq!(
            tenant_admin.require_unscoped_admin().unwrap_err().status,
            403
        );
        assert_eq!(
            tenant_key(Role::Write, "a")
                .require_unscoped_admin()
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn a_tenant_key_sees_and_writes_only_its_tenant() {
        let acme = tenant_key(Role::Write, "acme");
        assert!(acme.sees(Some("acme")));
        assert!(!acme.sees(Some("other")));
        assert!(!acme.sees(None));
        assert_eq!(
            acme.tenant_for_write(None).unwrap().as_deref(),
            Some("acme")
        );
        assert!(acme.tenant_for_write(Some("acme".into())).is_ok());
        assert_eq!(
            acme.tenant_for_write(Some("other".into()))
                .unwrap_err()
                .code,
            "forbidden"
        );
        let admin = Access::admin();
        assert!(admin.sees(None) && admin.sees(Some("x")));
        assert_eq!(admin.tenant_for_write(None).unwrap(), None);
    }
}
