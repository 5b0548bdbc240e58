//! How a service of the suite starts and stops: its settings ([`settings`], parsed by clap from
//! flags and environment variables, [`env`] for the value parsers and [`ConfigError`]), its
//! sockets ([`Listeners`], also inherited through `LISTEN_FDS`), health and reflection, the one
//! graceful drain of gRPC and HTTP servers ([`serve`]), SIGTERM/SIGINT ([`shutdown`]) and the
//! body of every `main` ([`run_service`]). Logs, traces, metrics and identity are `telemetry`'s.

pub mod backend;
pub mod env;
pub mod lifecycle;
#[cfg(feature = "migrations")]
pub mod migrations;
pub mod serve;
pub mod settings;
pub mod shutdown;

pub use backend::{Caller, backend_url};
pub use env::ConfigError;
pub use lifecycle::{BoxStop, Listeners, ServerHandle, run_service, stop_on_signal};
pub use serve::serve_until_stopped;
pub use settings::ServiceSettings;
