//! Every route of both listeners in one table: the router resolves
//! requests against it, metrics label requests with its templates, and
//! the API description is written from it, so the three cannot disagree.

use hyper::Method;

use super::Surface;

/// What the dispatcher runs; one variant per row of `ROUTES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteId {
    Healthz,
    Readyz,
    UnsubscribePage,
    UnsubscribeOneClick,
    FeedbackReceive,
    SegmentBatch,
    SegmentCall,
    EventsCreate,
    EventsList,
    EventsBatch,
    EventsExport,
    EventGet,
    UserGet,
    UserEvents,
    EventStats,
    Funnel,
    Attribution,
    EndpointsCreate,
    EndpointsList,
    EndpointGet,
    EndpointPatch,
    EndpointDelete,
    EndpointStats,
    EndpointSecret,
    EndpointRotateSecret,
    EndpointTest,
    EndpointEnable,
    EndpointDisable,
    EndpointRecover,
    EndpointReplay,
    DeliveriesList,
    DeadLettersList,
    DeliveryGet,
    DeliveryRetry,
    EmailsSend,
    EmailsList,
    EmailGet,
    SuppressionsList,
    SuppressionPut,
    SuppressionDelete,
    FeedbackList,
    StreamsList,
    StreamHealth,
    StreamPause,
    StreamResume,
    AdminBackup,
    AdminStorage,
    KeysCreate,
    KeysList,
    KeyRevoke,
    Metrics,
    OpenApi,
    EventTypesList,
    EventTypeGet,
    EventTypePut,
    EventTypeDelete,
    PortalLinksCreate,
    PortalPage,
    PortalScript,
    PortalStyle,
    PortalSession,
    PortalEndpointsList,
    PortalEndpointsCreate,
    PortalEndpointGet,
    PortalEndpointPatch,
    PortalEndpointStats,
    PortalEndpointSecret,
    PortalEndpointRotateSecret,
    PortalEndpointTest,
    PortalEndpointEnable,
    PortalEndpointDisable,
    PortalDeliveriesList,
    PortalDeliveryGet,
    PortalDeliveryRetry,
    PortalEventTypes,
    AdminOverview,
    DashboardPage,
    DashboardAsset,
    DashboardSignIn,
    DashboardSignOut,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No API key: the route authenticates by its own scheme (ESP
    /// signatures, Segment write keys, signed links) or needs none.
    Own,
    /// A read key for GET, a write key otherwise; tenant keys see their own.
    ByMethod,
    /// A write key even to read: the answer is a secret.
    Write,
    /// A key without a tenant: the route acts on what every tenant shares.
    Untenanted,
    /// An admin key without a tenant: the route reaches every tenant's data
    /// or could mint itself any grant.
    UnscopedAdmin,
    /// A read key of any tenant to read; a key without a tenant to change
    /// (write role). Event types are shared: the schema one tenant stored
    /// would refuse another tenant's events, and its sample would reach
    /// another tenant's receivers, so no tenant may change them.
    SharedByTenants,
}

pub struct Route {
    pub id: RouteId,
    pub method: Method,
    /// `/v1/endpoints/{id}/stats`: literal segments and `{name}` parameters.
    pub path: &'static str,
    /// Also served on the public listener (every route is on the private one).
    pub public: bool,
    pub auth: Auth,
    pub summary: &'static str,
}

const fn route(
    id: RouteId,
    method: Method,
    path: &'static str,
    auth: Auth,
    summary: &'static str,
) -> Route {
    Route {
        id,
        method,
        path,
        public: false,
        auth,
        summary,
    }
}

/// A route the public listener serves too.
const fn public(id: RouteId, method: Method, path: &'static str, summary: &'static str) -> Route {
    Route {
        id,
        method,
        path,
        public: true,
        auth: Auth::Own,
        summary,
    }
}

use Auth::*;
use RouteId::*;

pub static ROUTES: &[Route] = &[
    public(
        Healthz,
        Method::GET,
        "/healthz",
        "Liveness: the process answers",
    ),
    route(
        Readyz,
        Method::GET,
        "/readyz",
        Own,
        "Readiness: the store and writer are up",
    ),
    public(
        UnsubscribePage,
        Method::GET,
        "/u/{token}",
        "The unsubscribe confirmation page of a signed link",
    ),
    public(
        UnsubscribePage,
        Method::HEAD,
        "/u/{token}",
        "The unsubscribe page's headers",
    ),
    public(
        UnsubscribeOneClick,
        Method::POST,
        "/u/{token}",
        "One-click unsubscribe (RFC 8058)",
    ),
    public(
        FeedbackReceive,
        Method::POST,
        "/feedback/{provider}",
        "An ESP's delivery, bounce and complaint webhook",
    ),
    route(
        SegmentBatch,
        Method::POST,
        "/v1/batch",
        Own,
        "Segment-compatible batch of tracking calls",
    ),
    route(
        SegmentCall,
        Method::POST,
        "/v1/identify",
        Own,
        "Segment-compatible identify call",
    ),
    route(
        SegmentCall,
        Method::POST,
        "/v1/track",
        Own,
        "Segment-compatible track call",
    ),
    route(
        SegmentCall,
        Method::POST,
        "/v1/page",
        Own,
        "Segment-compatible page call",
    ),
    route(
        SegmentCall,
        Method::POST,
        "/v1/screen",
        Own,
        "Segment-compatible screen call",
    ),
    route(
        SegmentCall,
        Method::POST,
        "/v1/group",
        Own,
        "Segment-compatible group call",
    ),
    route(
        SegmentCall,
        Method::POST,
        "/v1/alias",
        Own,
        "Segment-compatible alias call",
    ),
    route(
        EventsCreate,
        Method::POST,
        "/v1/events",
        ByMethod,
        "Append one event",
    ),
    route(
        EventsList,
        Method::GET,
        "/v1/events",
        ByMethod,
        "Read the log from a cursor, filtered",
    ),
    route(
        EventsBatch,
        Method::POST,
        "/v1/events/batch",
        ByMethod,
        "Append up to 1,000 events in one commit",
    ),
    route(
        EventsExport,
        Method::GET,
        "/v1/events/export",
        ByMethod,
        "Export tracked events as NDJSON",
    ),
    route(
        EventGet,
        Method::GET,
        "/v1/events/{id}",
        ByMethod,
        "One event",
    ),
    route(
        UserGet,
        Method::GET,
        "/v1/users/{id}",
        ByMethod,
        "A tracked user's traits and aliases",
    ),
    route(
        UserEvents,
        Method::GET,
        "/v1/users/{id}/events",
        ByMethod,
        "A tracked user's events",
    ),
    route(
        EventStats,
        Method::GET,
        "/v1/stats/events",
        ByMethod,
        "Tracked event counts by name and time bucket",
    ),
    route(
        Funnel,
        Method::GET,
        "/v1/funnels",
        ByMethod,
        "Conversion through an ordered list of tracked events",
    ),
    route(
        Attribution,
        Method::GET,
        "/v1/attribution",
        ByMethod,
        "Conversions by first or last touch",
    ),
    route(
        EndpointsCreate,
        Method::POST,
        "/v1/endpoints",
        ByMethod,
        "Create a webhook endpoint",
    ),
    route(
        EndpointsList,
        Method::GET,
        "/v1/endpoints",
        ByMethod,
        "List webhook endpoints",
    ),
    route(
        EndpointGet,
        Method::GET,
        "/v1/endpoints/{id}",
        ByMethod,
        "One endpoint",
    ),
    route(
        EndpointPatch,
        Method::PATCH,
        "/v1/endpoints/{id}",
        ByMethod,
        "Change an endpoint",
    ),
    route(
        EndpointDelete,
        Method::DELETE,
        "/v1/endpoints/{id}",
        ByMethod,
        "Delete an endpoint and its pending deliveries",
    ),
    route(
        EndpointStats,
        Method::GET,
        "/v1/endpoints/{id}/stats",
        ByMethod,
        "An endpoint's delivery health",
    ),
    route(
        EndpointSecret,
        Method::GET,
        "/v1/endpoints/{id}/secret",
        Write,
        "An endpoint's signing secret",
    ),
    route(
        EndpointRotateSecret,
        Method::POST,
        "/v1/endpoints/{id}/rotate-secret",
        ByMethod,
        "Replace the signing secret, keeping the old one for a while",
    ),
    route(
        EndpointTest,
        Method::POST,
        "/v1/endpoints/{id}/test",
        ByMethod,
        "Send a test delivery now",
    ),
    route(
        EndpointEnable,
        Method::POST,
        "/v1/endpoints/{id}/enable",
        ByMethod,
        "Enable an endpoint",
    ),
    route(
        EndpointDisable,
        Method::POST,
        "/v1/endpoints/{id}/disable",
        ByMethod,
        "Disable an endpoint",
    ),
    route(
        EndpointRecover,
        Method::POST,
        "/v1/endpoints/{id}/recover",
        ByMethod,
        "Retry the endpoint's dead letters since a time",
    ),
    route(
        EndpointReplay,
        Method::POST,
        "/v1/endpoints/{id}/replay",
        ByMethod,
        "Deliver the log's matching events since a time again",
    ),
    route(
        DeliveriesList,
        Method::GET,
        "/v1/deliveries",
        ByMethod,
        "List deliveries",
    ),
    route(
        DeadLettersList,
        Method::GET,
        "/v1/dead-letters",
        ByMethod,
        "List deliveries that exhausted their retries",
    ),
    route(
        DeliveryGet,
        Method::GET,
        "/v1/deliveries/{id}",
        ByMethod,
        "One delivery with every attempt",
    ),
    route(
        DeliveryRetry,
        Method::POST,
        "/v1/deliveries/{id}/retry",
        ByMethod,
        "Attempt a delivery again now",
    ),
    route(
        EmailsSend,
        Method::POST,
        "/v1/emails",
        ByMethod,
        "Queue an email",
    ),
    route(
        EmailsList,
        Method::GET,
        "/v1/emails",
        ByMethod,
        "List emails",
    ),
    route(
        EmailGet,
        Method::GET,
        "/v1/emails/{id}",
        ByMethod,
        "One email with its attempts and ESP timeline",
    ),
    route(
        SuppressionsList,
        Method::GET,
        "/v1/suppressions",
        ByMethod,
        "List suppressed addresses",
    ),
    route(
        SuppressionPut,
        Method::PUT,
        "/v1/suppressions/{address}",
        ByMethod,
        "Suppress an address",
    ),
    route(
        SuppressionDelete,
        Method::DELETE,
        "/v1/suppressions/{address}",
        ByMethod,
        "Remove an address from a suppression list",
    ),
    route(
        FeedbackList,
        Method::GET,
        "/v1/feedback",
        ByMethod,
        "ESP feedback events, matched or not",
    ),
    route(
        StreamsList,
        Method::GET,
        "/v1/streams",
        Untenanted,
        "Every mail stream's health",
    ),
    route(
        StreamHealth,
        Method::GET,
        "/v1/streams/{name}/health",
        Untenanted,
        "A mail stream's bounce and complaint rates",
    ),
    route(
        StreamPause,
        Method::POST,
        "/v1/streams/{name}/pause",
        Untenanted,
        "Hold a stream's mail in the queue",
    ),
    route(
        StreamResume,
        Method::POST,
        "/v1/streams/{name}/resume",
        Untenanted,
        "Send a paused stream's mail again",
    ),
    route(
        AdminBackup,
        Method::GET,
        "/v1/admin/backup",
        UnscopedAdmin,
        "A consistent, compacted copy of the database",
    ),
    route(
        AdminStorage,
        Method::GET,
        "/v1/admin/storage",
        UnscopedAdmin,
        "Database size and table sizes",
    ),
    route(
        KeysCreate,
        Method::POST,
        "/v1/keys",
        UnscopedAdmin,
        "Create an API key, shown once",
    ),
    route(
        KeysList,
        Method::GET,
        "/v1/keys",
        UnscopedAdmin,
        "List API keys without their secrets",
    ),
    route(
        KeyRevoke,
        Method::DELETE,
        "/v1/keys/{id}",
        UnscopedAdmin,
        "Revoke an API key",
    ),
    route(
        Metrics,
        Method::GET,
        "/metrics",
        Untenanted,
        "Prometheus metrics of every tenant's traffic",
    ),
    route(
        OpenApi,
        Method::GET,
        "/v1/openapi.json",
        ByMethod,
        "This API's OpenAPI 3.1 description",
    ),
    route(
        EventTypesList,
        Method::GET,
        "/v1/event-types",
        SharedByTenants,
        "The event catalog: every type with its versions, schemas and samples",
    ),
    route(
        EventTypeGet,
        Method::GET,
        "/v1/event-types/{name}",
        SharedByTenants,
        "One catalogued event type",
    ),
    route(
        EventTypePut,
        Method::PUT,
        "/v1/event-types/{name}",
        SharedByTenants,
        "Create or replace an event type; events of it are validated on ingest",
    ),
    route(
        EventTypeDelete,
        Method::DELETE,
        "/v1/event-types/{name}",
        SharedByTenants,
        "Remove an event type from the catalog",
    ),
    route(
        PortalLinksCreate,
        Method::POST,
        "/v1/portal-links",
        UnscopedAdmin,
        "A signed, expiring link to one tenant's customer portal",
    ),
    // The customer portal: the token in the path is the credential, so its
    // rows take no API key and face the internet like unsubscribe links.
    public(
        PortalPage,
        Method::GET,
        "/portal/{token}",
        "The customer portal's page for the link's tenant",
    ),
    public(
        PortalScript,
        Method::GET,
        "/portal-assets/portal.js",
        "The customer portal's script",
    ),
    public(
        PortalStyle,
        Method::GET,
        "/portal-assets/portal.css",
        "The customer portal's style sheet",
    ),
    public(
        PortalSession,
        Method::GET,
        "/portal/{token}/api/session",
        "Portal: the link's tenant and expiry",
    ),
    public(
        PortalEndpointsList,
        Method::GET,
        "/portal/{token}/api/endpoints",
        "Portal: the tenant's webhook endpoints",
    ),
    public(
        PortalEndpointsCreate,
        Method::POST,
        "/portal/{token}/api/endpoints",
        "Portal: create an endpoint for the tenant",
    ),
    public(
        PortalEndpointGet,
        Method::GET,
        "/portal/{token}/api/endpoints/{id}",
        "Portal: one of the tenant's endpoints",
    ),
    public(
        PortalEndpointPatch,
        Method::PATCH,
        "/portal/{token}/api/endpoints/{id}",
        "Portal: change one of the tenant's endpoints",
    ),
    public(
        PortalEndpointStats,
        Method::GET,
        "/portal/{token}/api/endpoints/{id}/stats",
        "Portal: an endpoint's delivery health",
    ),
    public(
        PortalEndpointSecret,
        Method::GET,
        "/portal/{token}/api/endpoints/{id}/secret",
        "Portal: an endpoint's signing secret",
    ),
    public(
        PortalEndpointRotateSecret,
        Method::POST,
        "/portal/{token}/api/endpoints/{id}/rotate-secret",
        "Portal: replace an endpoint's signing secret",
    ),
    public(
        PortalEndpointTest,
        Method::POST,
        "/portal/{token}/api/endpoints/{id}/test",
        "Portal: send a test delivery now",
    ),
    public(
        PortalEndpointEnable,
        Method::POST,
        "/portal/{token}/api/endpoints/{id}/enable",
        "Portal: enable an endpoint",
    ),
    public(
        PortalEndpointDisable,
        Method::POST,
        "/portal/{token}/api/endpoints/{id}/disable",
        "Portal: disable an endpoint",
    ),
    public(
        PortalDeliveriesList,
        Method::GET,
        "/portal/{token}/api/deliveries",
        "Portal: the tenant's deliveries",
    ),
    public(
        PortalDeliveryGet,
        Method::GET,
        "/portal/{token}/api/deliveries/{id}",
        "Portal: one delivery with every attempt",
    ),
    public(
        PortalDeliveryRetry,
        Method::POST,
        "/portal/{token}/api/deliveries/{id}/retry",
        "Portal: attempt a delivery again now",
    ),
    public(
        PortalEventTypes,
        Method::GET,
        "/portal/{token}/api/event-types",
        "Portal: the event catalog with sample payloads",
    ),
    route(
        AdminOverview,
        Method::GET,
        "/v1/admin/overview",
        UnscopedAdmin,
        "The dashboard's overview: events, deliveries, queues and streams over the last hour",
    ),
    route(
        DashboardPage,
        Method::GET,
        "/admin",
        Own,
        "The admin dashboard: its sign-in page, or the app once signed in",
    ),
    route(
        DashboardAsset,
        Method::GET,
        "/admin/assets/{name}",
        Own,
        "The dashboard's scripts and styles",
    ),
    route(
        DashboardSignIn,
        Method::POST,
        "/admin/session",
        Own,
        "Sign in to the dashboard with an admin API key: a session cookie and its CSRF token",
    ),
    route(
        DashboardSignOut,
        Method::POST,
        "/admin/logout",
        Own,
        "End the dashboard session",
    ),
];

/// A request matched against the table.
pub enum Resolved<'p> {
    Found {
        route: &'static Route,
        /// The row's position in `ROUTES`.
        index: usize,
        /// The values of the template's `{…}` segments, in order.
        params: Vec<&'p str>,
    },
    /// The path names a route, but not for this method.
    MethodNotAllowed {
        allow: String,
        /// The most specific matching route: who may learn the answer.
        auth: Auth,
    },
    NotFound,
}

/// A template split once into its segments, so that matching a request
/// against every row compares slices instead of re-splitting strings (it
/// was 7% of the daemon's CPU under single-event ingest).
enum Part {
    Literal(&'static str),
    Param,
}

/// `ROUTES[i]`'s template, split: `TEMPLATES[i]`.
static TEMPLATES: std::sync::LazyLock<Vec<Vec<Part>>> = std::sync::LazyLock::new(|| {
    ROUTES
        .iter()
        .map(|row| {
            row.path
                .trim_start_matches('/')
                .split('/')
                .map(|part| {
                    if part.starts_with('{') {
                        Part::Param
                    } else {
                        Part::Literal(part)
                    }
                })
                .collect()
        })
        .collect()
});

/// Literal segments that matched, or `None` when the template does not fit.
fn fit<'p>(template: &[Part], segments: &[&'p str], params: &mut Vec<&'p str>) -> Option<usize> {
    if template.len() != segments.len() {
        return None;
    }
    params.clear();
    let mut literals = 0;
    for (part, segment) in template.iter().zip(segments) {
        match part {
            Part::Param if segment.is_empty() => return None,
            Part::Param => params.push(*segment),
            Part::Literal(literal) if literal == segment => literals += 1,
            Part::Literal(_) => return None,
        }
    }
    Some(literals)
}

/// The route `surface` serves for `method` and `path`: the template with
/// the most literal segments wins, so `/v1/events/batch` is not an event id.
pub fn resolve<'p>(surface: Surface, method: &Method, path: &'p str) -> Resolved<'p> {
    let segments: Vec<&'p str> = path.trim_start_matches('/').split('/').collect();
    let templates = &*TEMPLATES;
    let mut best: Option<(usize, &'static str)> = None;
    let mut params = Vec::new();
    for (row, template) in ROUTES
        .iter()
        .zip(templates)
        .filter(|(row, _)| surface == Surface::Private || row.public)
    {
        if let Some(literals) = fit(template, &segments, &mut params) {
            if best.is_none_or(|(most, _)| literals > most) {
                best = Some((literals, row.path));
            }
        }
    }
    let Some((_, template)) = best else {
        return Resolved::NotFound;
    };
    let same_path = || {
        ROUTES
            .iter()
            .filter(move |row| row.path == template && (surface == Surface::Private || row.public))
    };
    match ROUTES.iter().enumerate().find(|(_, row)| {
        row.path == template && row.method == *method && (surface == Surface::Private || row.public)
    }) {
        Some((index, route)) => {
            fit(&templates[index], &segments, &mut params);
            Resolved::Found {
                route,
                index,
                params,
            }
        }
        None => {
            // In one fixed order, whatever the table's.
            let allow: Vec<&str> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .into_iter()
                .filter(|name| same_path().any(|row| row.method.as_str() == *name))
                .collect();
            let auth = same_path().next().map_or(Own, |row| row.auth);
            Resolved::MethodNotAllowed {
                allow: allow.join(", "),
                auth,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(surface: Surface, method: Method, path: &str) -> Option<(RouteId, Vec<String>)> {
        match resolve(surface, &method, path) {
            Resolved::Found {
                route,
                index,
                params,
            } => {
                assert!(std::ptr::eq(&ROUTES[index], route));
                Some((route.id, params.into_iter().map(str::to_owned).collect()))
            }
            _ => None,
        }
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        use Surface::Private;
        assert_eq!(
            found(Private, Method::POST, "/v1/events/batch"),
            Some((EventsBatch, vec![]))
        );
        assert_eq!(
            found(Private, Method::GET, "/v1/events/evt_1"),
            Some((EventGet, vec!["evt_1".into()]))
        );
        assert_eq!(
            found(Private, Method::POST, "/v1/endpoints/ep_1/rotate-secret"),
            Some((EndpointRotateSecret, vec!["ep_1".into()]))
        );
        assert!(matches!(
            resolve(Private, &Method::GET, "/v1/events/batch"),
            Resolved::MethodNotAllowed { ref allow, .. } if allow == "POST"
        ));
        assert!(matches!(
            resolve(Private, &Method::PUT, "/v1/endpoints/ep_1"),
            Resolved::MethodNotAllowed { ref allow, .. } if allow == "GET, PATCH, DELETE"
        ));
    }

    #[test]
    fn the_public_listener_serves_only_its_rows_and_empty_parameters_match_nothing() {
        assert!(found(Surface::Public, Method::GET, "/v1/events").is_none());
        assert!(found(Surface::Public, Method::POST, "/feedback/ses").is_some());
        assert!(found(Surface::Private, Method::GET, "/v1/events/").is_none());
        assert!(found(Surface::Private, Method::GET, "/v1/endpoints/ep_1/nope").is_none());
    }

    #[test]
    fn portal_rows_face_both_listeners_take_no_key_and_pass_every_parameter() {
        for surface in [Surface::Public, Surface::Private] {
            assert_eq!(
                found(surface, Method::POST, "/portal/tok/api/endpoints/ep_1/test"),
                Some((PortalEndpointTest, vec!["tok".into(), "ep_1".into()]))
            );
            assert_eq!(
                found(surface, Method::GET, "/portal/tok"),
                Some((PortalPage, vec!["tok".into()]))
            );
        }
        for row in ROUTES.iter().filter(|r| r.path.starts_with("/portal")) {
            assert!(row.public && row.auth == Own, "{} {}", row.method, row.path);
        }
        assert!(found(Surface::Public, Method::POST, "/v1/portal-links").is_none());
        assert_eq!(
            found(Surface::Private, Method::POST, "/v1/portal-links"),
            Some((PortalLinksCreate, vec![]))
        );
    }

    #[test]
    fn every_row_is_reachable_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for row in ROUTES {
            assert!(
                seen.insert((row.method.as_str(), row.path)),
                "{} {} twice",
                row.method,
                row.path
            );
            assert!(!row.summary.is_empty(), "{} {}", row.method, row.path);
            let concrete = row.path.replace("{", "x").replace("}", "");
            assert_eq!(
                found(Surface::Private, row.method.clone(), &concrete).map(|(id, _)| id),
                Some(row.id),
                "{} {}",
                row.method,
                row.path
            );
        }
    }
}
