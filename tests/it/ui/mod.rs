//! The admin dashboard: its sessions and headers over HTTP, and its pages
//! in a real browser.

mod dashboard_browser;
pub mod dashboard_http;
