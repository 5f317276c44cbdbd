//! What a node on PostgreSQL serves its API with.

use std::sync::Arc;

use super::auth::ApiKeys;
use super::catalog::CatalogApi;
use super::dashboard::DashboardApi;
use super::events::EventApi;
use super::keys::KeysApi;
use super::mail::MailApi;
use super::overview::History;
use super::tracking::TrackingApi;
use crate::config::Config;
use crate::pg::dispatch::PgDispatcher;
use crate::pg::log::PgLog;
use crate::pg::webhooks::PgHooks;
use crate::portal_link::PortalKey;

pub struct PostgresApp {
    /// For reads no other handle serves (the queues' depth for metrics).
    pub pool: deadpool_postgres::Pool,
    pub config: Arc<Config>,
    pub keys: Arc<ApiKeys>,
    pub keys_api: KeysApi,
    /// The dashboard's routes, with sessions in the shared database.
    pub dashboard: DashboardApi,
    /// The database's size and the queues' depth as the dashboard saw
    /// them from this node: a node records what it was asked, as the
    /// database keeps no history of its size either.
    pub history: History,
    pub catalog_api: CatalogApi,
    pub events: EventApi,
    pub mail: MailApi,
    pub tracking: TrackingApi,
    pub log: PgLog,
    pub hooks: PgHooks,
    pub dispatcher: Arc<PgDispatcher>,
    /// Signs portal links with a key every node shares, so a link one node
    /// made opens on any.
    pub portal_links: PortalKey,
    /// `public.url`, or this node's own address: what links point to.
    pub public_url: String,
}
