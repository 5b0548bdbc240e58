//! An in-process OTLP/gRPC trace collector on port 0, keeping every export request as received;
//! it can answer its first calls with an error, to test an exporter's retries.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

#[derive(Debug, Default)]
struct State {
    calls: usize,
    requests: Vec<ExportTraceServiceRequest>,
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    failures: usize,
    code: tonic::Code,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut st = self.state.lock().expect("collector state");
        st.calls += 1;
        if st.calls <= self.failures {
            return Err(tonic::Status::new(self.code, "not now"));
        }
        st.requests.push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running collector; it stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// A collector that accepts every request.
    pub async fn start() -> Collector {
        Collector::failing(0, tonic::Code::Ok).await
    }

    /// A collector that answers its first `failures` calls with `code`, then accepts.
    pub async fn failing(failures: usize, code: tonic::Code) -> Collector {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let svc = Service {
            state: state.clone(),
            failures,
            code,
        };
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(svc))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(tcp))
                .await;
        });
        Collector { addr, state, server }
    }

    /// `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Export calls received, failed ones included.
    pub fn calls(&self) -> usize {
        self.state.lock().expect("collector state").calls
    }

    /// The requests accepted so far.
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.state.lock().expect("collector state").requests.clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}
