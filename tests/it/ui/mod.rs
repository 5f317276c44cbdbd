//! The admin dashboard: its sessions and headers over HTTP, and its pages
//! in a real browser.

mod dashboard_browser;
mod dashboard_http;
