//! What every gRPC server of the suite does around its services: reflection
//! v1 and v1alpha, health, and the graceful stop.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
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
/// open-streams gauge of [`crate::grpc::GrpcServerLayer`].
pub const COMMON_STREAMING_METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Runs `server` until `stop` resolves, then: health NOT_SERVING for `""`
/// and each of `services`, `draining` cancelled (the server stops accepting
/// and the layer ends open streams with UNAVAILABLE), in-flight calls
/// finish, all within `grace`; past it the remaining connections close.
pub async fn serve_until_stopped<E>(
    server: impl Future<Output = Result<(), E>>,
    stop: impl Future<Output = ()>,
    health: &HealthReporter,
    services: &[&str],
    draining: &CancellationToken,
    grace: Duration,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res.context("gRPC server failed"),
        () = stop => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: NOT_SERVING, draining calls and streams"
    );
    for name in services {
        health.set_service_status(*name, ServingStatus::NotServing).await;
    }
    health.set_service_status("", ServingStatus::NotServing).await;
    draining.cancel();
    match tokio::time::timeout(grace, &mut server).await {
        Ok(res) => res.context("gRPC server failed while draining")?,
        Err(_) => tracing::warn!("drain took longer than SHUTDOWN_GRACE_SECS; closing the remaining connections"),
    }
    tracing::info!("shutdown complete");
    Ok(())
}
