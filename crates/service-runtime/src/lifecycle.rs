//! How a service process starts and stops: the body of every `main` ([`run_service`]), its two
//! sockets ([`Listeners`]), reflection for the gRPC servers, and in-process servers for tests
//! ([`ServerHandle`]). The graceful drain itself is [`crate::serve`].

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    process::ExitCode,
};

use anyhow::Context as _;
use telemetry::{Identity, Settings, Telemetry, init};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic_reflection::server::{
    Builder,
    v1::{ServerReflection as V1, ServerReflectionServer as V1Server},
    v1alpha::{ServerReflection as V1Alpha, ServerReflectionServer as V1AlphaServer},
};

/// Reflection over `descriptor_sets` plus health. Each protocol also lists
/// the other, so a client of either can see that both are served (as grpc-go does).
pub fn reflection(
    descriptor_sets: &[&'static [u8]],
) -> anyhow::Result<(V1Server<impl V1>, V1AlphaServer<impl V1Alpha>)> {
    let builder = || {
        descriptor_sets
            .iter()
            .fold(Builder::configure(), |b, fds| {
                b.register_encoded_file_descriptor_set(fds)
            })
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = builder()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// Paths of the streaming methods that every server has, for the
/// open-streams gauge of [`telemetry::grpc::GrpcServerLayer`].
pub const COMMON_STREAMING_METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A server running in this process (tests, tools): its addresses, and a
/// way to stop it gracefully.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl ServerHandle {
    /// Spawns `run(stop)`; `stop` resolves on `begin_shutdown`.
    pub fn spawn<F>(addr: SocketAddr, metrics_addr: SocketAddr, run: impl FnOnce(BoxStop) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(run(Box::pin(async {
            let _ = rx.await;
        })));
        Self {
            addr,
            metrics_addr,
            stop: Some(tx),
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the graceful stop without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops and waits until the server has drained.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        self.task.await.context("server task panicked")?
    }
}

/// The stop signal handed to a server's run function.
pub type BoxStop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves on SIGTERM or SIGINT, after logging which.
pub fn stop_on_signal() -> BoxStop {
    Box::pin(async {
        let sig = crate::shutdown::signal_received().await;
        tracing::info!(signal = sig, "signal received");
    })
}

/// The body of every service's `main`: take the config (exit 2 naming the
/// variable when it is bad; clap has already exited 2 for a value it refused), start telemetry, serve until SIGTERM/SIGINT,
/// flush telemetry, exit 0 (or 1 with the error on stderr and in the log).
pub async fn run_service<C>(
    name: &str,
    config: Result<C, crate::ConfigError>,
    identity: impl FnOnce(&C) -> Identity,
    serve: impl AsyncFnOnce(C, &Telemetry, BoxStop) -> anyhow::Result<()>,
) -> ExitCode {
    let cfg = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match Settings::from_env(identity(&cfg))
        .map_err(anyhow::Error::from)
        .and_then(|s| init(&s))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = serve(cfg, &telemetry, stop_on_signal()).await;
    // Flush buffered spans whether the server stopped cleanly or not.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{name} stopped");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A service's two sockets: its main port (`PORT`) and `METRICS_PORT`.
pub struct Listeners {
    pub main: TcpListener,
    pub metrics: TcpListener,
}

impl Listeners {
    /// The sockets the process that started this one bound for it, else both bound here, naming
    /// the variable when one cannot be bound.
    pub async fn bind(addr: IpAddr, port: u16, metrics_port: u16) -> anyhow::Result<Self> {
        if let Some(inherited) = Self::inherited()? {
            return Ok(inherited);
        }
        let main_addr = SocketAddr::new(addr, port);
        let main = TcpListener::bind(main_addr)
            .await
            .with_context(|| format!("cannot bind PORT on {main_addr}"))?;
        let metrics = telemetry::metrics::bind(SocketAddr::new(addr, metrics_port)).await?;
        Ok(Self { main, metrics })
    }

    /// Sockets handed over as systemd hands them to a service (`sd_listen_fds`): `LISTEN_FDS=2`,
    /// the main port on fd 3 and the metrics port on fd 4, for this process when `LISTEN_PID` is
    /// set. A supervisor that binds a pod's ports once keeps them across restarts, with no window
    /// between its bind and the pod's in which another process could take them. Taken once.
    fn inherited() -> anyhow::Result<Option<Self>> {
        use std::os::fd::FromRawFd as _;
        use std::sync::atomic::{AtomicBool, Ordering};
        static TAKEN: AtomicBool = AtomicBool::new(false);
        let Ok(n) = std::env::var("LISTEN_FDS") else {
            return Ok(None);
        };
        if std::env::var("LISTEN_PID").is_ok_and(|p| p != std::process::id().to_string()) {
            return Ok(None);
        }
        if n != "2" {
            anyhow::bail!("LISTEN_FDS={n}: expected 2 sockets (the main port on fd 3, METRICS_PORT on fd 4)");
        }
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let take = |fd: i32, what: &str| -> anyhow::Result<TcpListener> {
            // SAFETY: fds 3 and 4 are ours by the protocol and taken once (`TAKEN`); a descriptor
            // that is not a listening TCP socket is refused below rather than used.
            let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            l.local_addr()
                .with_context(|| format!("LISTEN_FDS: fd {fd} ({what}) is not a listening socket"))?;
            l.set_nonblocking(true)?;
            TcpListener::from_std(l).with_context(|| format!("LISTEN_FDS: fd {fd} ({what})"))
        };
        Ok(Some(Self {
            main: take(3, "PORT")?,
            metrics: take(4, "METRICS_PORT")?,
        }))
    }
}
