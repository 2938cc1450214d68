//! RPC metrics of a host's gRPC server: a tower layer over tonic's routes
//! that counts every call by service, method and status code, and times
//! it from the request's arrival until its response's last frame (the
//! trailers carrying `grpc-status`) went out, or until the call was
//! dropped (counted as `Cancelled`). For a streaming call that is the
//! whole stream, not its first message.
//!
//! Paths come from callers, so only the methods weft serves ([`METHODS`])
//! are counted by name; a call to any other path (a made-up method, even
//! of a real service) counts as `unknown`. Every label value is one of a
//! fixed set, so no caller can add series or put text in the exposition.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every method a weft host serves, as `/package.Service/Method` (a unit
/// test checks the list against the protos).
pub const METHODS: &[&str] = &[
    "/weft.v1.TaskService/GetStatus",
    "/weft.v1.TaskService/RegisterPartition",
    "/weft.v1.TaskService/RunPartition",
    "/weft.v1.TaskService/DeliverTensors",
    "/weft.v1.TaskService/ForgetStep",
    "/weft.v1.ControlService/CreateExperiment",
    "/weft.v1.ControlService/ListExperiments",
    "/weft.v1.ControlService/DeleteExperiment",
    "/weft.v1.ControlService/HasModule",
    "/weft.v1.ControlService/UploadModule",
    "/weft.v1.ControlService/StartProgram",
    "/weft.v1.ControlService/ListPrograms",
    "/weft.v1.ControlService/StreamLogs",
    "/weft.v1.ControlService/KillProgram",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

type MethodLabels = [(&'static str, &'static str); 2];
type CallLabels = [(&'static str, &'static str); 3];

/// The calls a server answered: counts by method and code, and latencies
/// by method.
#[derive(Debug)]
pub struct RpcMetrics {
    calls: Family<CallLabels, Counter>,
    seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    // 100 us to about 15 s.
    Histogram::new(exponential_buckets(1e-4, 2.5, 14))
}

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            calls: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        }
    }
}

impl RpcMetrics {
    /// Registers its families (`weft_rpc_server_calls_total`,
    /// `weft_rpc_server_seconds`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "weft_rpc_server_calls",
            "gRPC calls this host answered, by service, method and status code",
            self.calls.clone(),
        );
        registry.register(
            "weft_rpc_server_seconds",
            "Time from a gRPC call's arrival to its response's end, by service and method",
            self.seconds.clone(),
        );
    }

    /// `(service, method)` of a request path `/package.Service/Method`:
    /// one of [`METHODS`], or `unknown`.
    fn name(path: &str) -> (&'static str, &'static str) {
        match METHODS.iter().find(|m| **m == path) {
            Some(known) => known[1..].split_once('/').expect("METHODS are /service/method"),
            None => ("unknown", "unknown"),
        }
    }

    fn record(&self, (service, method): (&'static str, &'static str), code: tonic::Code, seconds: f64) {
        self.seconds.get_or_create(&[("service", service), ("method", method)]).observe(seconds);
        self.calls.get_or_create(&[("service", service), ("method", method), ("code", code_name(code))]).inc();
    }
}

/// The canonical name of a gRPC status code, as grpc-go prints it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// One call being answered; recorded when dropped, as `Cancelled` unless
/// its response ended.
struct CallRecord {
    metrics: Arc<RpcMetrics>,
    method: (&'static str, &'static str),
    start: Instant,
    /// From the headers (a trailers-only answer) or the trailers.
    code: Option<tonic::Code>,
    ended: bool,
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let code = match (self.ended, self.code) {
            (false, _) => tonic::Code::Cancelled,
            (true, Some(code)) => code,
            (true, None) => tonic::Code::Unknown,
        };
        self.metrics.record(self.method, code, self.start.elapsed().as_secs_f64());
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(value))
}

/// A response body that records its call when its trailers or its end
/// come, or when it is dropped unfinished.
struct MeteredBody {
    inner: tonic::body::Body,
    call: Option<CallRecord>,
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(call) = self.call.as_mut() {
                        call.code = grpc_status(trailers).or(call.code);
                        call.ended = true;
                    }
                    self.call = None;
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.as_mut() {
                    call.ended = true;
                }
                self.call = None;
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.as_mut() {
                    call.ended = true;
                    call.code = Some(tonic::Code::Internal);
                }
                self.call = None;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The layer: `Server::builder().layer(RpcLayer(metrics))`.
#[derive(Clone, Debug)]
pub struct RpcLayer(pub Arc<RpcMetrics>);

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, metrics: self.0.clone() }
    }
}

/// [`RpcLayer`]'s service around tonic's routes.
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

impl<S, B> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = RpcMetrics::name(request.uri().path());
        let mut call =
            CallRecord { metrics: self.metrics.clone(), method, start: Instant::now(), code: None, ended: false };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // A status in the headers is a trailers-only answer (every
            // error before a first message): the call ends here, and its
            // empty body is never polled.
            if let Some(code) = grpc_status(response.headers()) {
                call.code = Some(code);
                call.ended = true;
                drop(call);
                return Ok(response);
            }
            Ok(response.map(|inner| tonic::body::Body::new(MeteredBody { inner, call: Some(call) })))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service};

    fn text(metrics: &RpcMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    /// A service answering every call as tonic does: `Err(status)` as a
    /// trailers-only response, `Ok` as a body ending in OK trailers.
    #[derive(Clone)]
    struct Answers(Option<tonic::Status>);

    impl Service<http::Request<()>> for Answers {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(match &self.0 {
                Some(status) => status.clone().into_http(),
                None => {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let frames = vec![
                        Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                    http::Response::new(tonic::body::Body::new(body))
                }
            }))
        }
    }

    fn call(metrics: &Arc<RpcMetrics>, answer: Option<tonic::Status>, path: &str) {
        let mut service = RpcLayer(metrics.clone()).layer(Answers(answer));
        let request = http::Request::builder().uri(path).body(()).unwrap();
        let response = futures_util::FutureExt::now_or_never(service.call(request)).unwrap().unwrap();
        let mut body = response.into_body();
        while let Some(frame) =
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::frame(&mut body)).unwrap()
        {
            frame.unwrap();
        }
    }

    #[test]
    fn answers_are_counted_by_their_status_whether_in_headers_or_trailers() {
        let m = Arc::new(RpcMetrics::default());
        let path = "/weft.v1.ControlService/StartProgram";
        call(&m, None, path);
        call(&m, Some(tonic::Status::unauthenticated("no token")), path);
        call(&m, Some(tonic::Status::unavailable("gone")), "/weft.v1.TaskService/RunPartition");
        let out = text(&m);
        let start = r#"weft_rpc_server_calls_total{service="weft.v1.ControlService",method="StartProgram""#;
        assert!(out.contains(&format!(r#"{start},code="OK"}} 1"#)), "{out}");
        assert!(out.contains(&format!(r#"{start},code="Unauthenticated"}} 1"#)), "{out}");
        assert!(out.contains(r#"method="RunPartition",code="Unavailable"} 1"#), "{out}");
        assert!(!out.contains("Canceled"), "{out}");
    }

    #[test]
    fn made_up_paths_count_as_unknown_and_leave_no_trace_of_their_text() {
        let m = Arc::new(RpcMetrics::default());
        for path in ["/weft.v1.ControlService/Made1", "/a\"b/c", "/weft.v1.TaskService/RunPartition/x", "/"] {
            call(&m, Some(tonic::Status::unimplemented("")), path);
        }
        let out = text(&m);
        assert!(
            out.contains(r#"weft_rpc_server_calls_total{service="unknown",method="unknown",code="Unimplemented"} 4"#),
            "{out}"
        );
        assert!(!out.contains("Made1") && !out.contains("a\"b"), "{out}");
    }

    #[test]
    fn a_call_dropped_before_its_end_counts_as_canceled() {
        let m = Arc::new(RpcMetrics::default());
        let method = RpcMetrics::name("/weft.v1.TaskService/RunPartition");
        drop(CallRecord { metrics: m.clone(), method, start: Instant::now(), code: None, ended: false });
        let out = text(&m);
        assert!(
            out.contains(
                r#"weft_rpc_server_calls_total{service="weft.v1.TaskService",method="RunPartition",code="Canceled"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"weft_rpc_server_seconds_count{service="weft.v1.TaskService",method="RunPartition"} 1"#),
            "{out}"
        );
    }

    /// METHODS names every rpc of weft's protos.
    #[test]
    fn every_method_of_the_protos_is_counted_by_name() {
        let protos = [
            ("weft.v1.TaskService", include_str!("../../proto/weft/v1/task.proto")),
            ("weft.v1.ControlService", include_str!("../../proto/weft/v1/control.proto")),
        ];
        let mut found = 0;
        for (service, text) in protos {
            for line in text.lines().filter_map(|l| l.trim().strip_prefix("rpc ")) {
                let method = line.split('(').next().unwrap().trim();
                assert!(
                    METHODS.contains(&format!("/{service}/{method}").as_str()),
                    "{service}/{method} is not in METHODS"
                );
                found += 1;
            }
        }
        assert_eq!(found + 2, METHODS.len(), "METHODS holds only the protos' methods and health's two");
    }
}
