//! RPC metrics of a host's gRPC server: a tower layer over tonic's routes
//! that counts every call by service, method and status code, and times
//! it from the request's arrival until its response's last frame (the
//! trailers carrying `grpc-status`) went out, or until the call was
//! dropped (counted as `Cancelled`). For a streaming call that is the
//! whole stream, not its first message.
//!
//! Method names come from callers, so they are bounded: a call tonic
//! answers `Unimplemented` (no such route) counts as `unknown`, and past
//! [`MAX_METHODS`] distinct names (say, unauthenticated calls to made-up
//! methods of a real service) the rest count as `other`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Distinct `service/method` names counted by name; later ones are `other`.
pub const MAX_METHODS: usize = 64;

type MethodLabels = [(&'static str, String); 2];
type CallLabels = [(&'static str, String); 3];

/// The calls a server answered: counts by method and code, and latencies
/// by method.
#[derive(Debug)]
pub struct RpcMetrics {
    calls: Family<CallLabels, Counter>,
    seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    methods: Mutex<HashSet<String>>,
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
            methods: Mutex::default(),
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

    /// `(service, method)` of a request path `/package.Service/Method`,
    /// bounded as the module says.
    fn name(&self, path: &str) -> (String, String) {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", path));
        let mut seen = self.methods.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(path) || (seen.len() < MAX_METHODS && seen.insert(path.to_string())) {
            (service.to_string(), method.to_string())
        } else {
            ("other".to_string(), "other".to_string())
        }
    }

    fn record(&self, service: String, method: String, code: tonic::Code, seconds: f64) {
        let (service, method) = match code {
            tonic::Code::Unimplemented => ("unknown".to_string(), "unknown".to_string()),
            _ => (service, method),
        };
        let code = match code {
            tonic::Code::Ok => "OK".to_string(),
            other => format!("{other:?}"),
        };
        self.seconds.get_or_create(&[("service", service.clone()), ("method", method.clone())]).observe(seconds);
        self.calls.get_or_create(&[("service", service), ("method", method), ("code", code)]).inc();
    }
}

/// One call being answered; recorded when dropped, as `Cancelled` unless
/// its response ended.
struct CallRecord {
    metrics: Arc<RpcMetrics>,
    service: String,
    method: String,
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
        let (service, method) = (std::mem::take(&mut self.service), std::mem::take(&mut self.method));
        self.metrics.record(service, method, code, self.start.elapsed().as_secs_f64());
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
        let (service, method) = self.metrics.name(request.uri().path());
        let mut call = CallRecord {
            metrics: self.metrics.clone(),
            service,
            method,
            start: Instant::now(),
            code: None,
            ended: false,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            call.code = grpc_status(response.headers());
            Ok(response.map(|inner| tonic::body::Body::new(MeteredBody { inner, call: Some(call) })))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &RpcMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn names_are_bounded_and_unimplemented_calls_are_unknown() {
        let m = RpcMetrics::default();
        for i in 0..(MAX_METHODS + 10) {
            let (service, method) = m.name(&format!("/weft.v1.ControlService/Made{i}"));
            m.record(service, method, tonic::Code::Unauthenticated, 0.001);
        }
        let (s, n) = m.name("/weft.v1.TaskService/Nope");
        m.record(s, n, tonic::Code::Unimplemented, 0.001);
        let out = text(&m);
        let series = out.lines().filter(|l| l.starts_with("weft_rpc_server_calls_total{")).count();
        assert_eq!(series, MAX_METHODS + 2, "{out}");
        assert!(
            out.contains(r#"weft_rpc_server_calls_total{service="other",method="other",code="Unauthenticated"} 10"#),
            "{out}"
        );
        assert!(
            out.contains(r#"weft_rpc_server_calls_total{service="unknown",method="unknown",code="Unimplemented"} 1"#),
            "{out}"
        );
    }

    #[test]
    fn a_call_dropped_before_its_end_counts_as_cancelled() {
        let m = Arc::new(RpcMetrics::default());
        let (service, method) = m.name("/weft.v1.TaskService/RunPartition");
        let call = CallRecord { metrics: m.clone(), service, method, start: Instant::now(), code: None, ended: false };
        drop(call);
        let out = text(&m);
        assert!(
            out.contains(
                r#"weft_rpc_server_calls_total{service="weft.v1.TaskService",method="RunPartition",code="Cancelled"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"weft_rpc_server_seconds_count{service="weft.v1.TaskService",method="RunPartition"} 1"#),
            "{out}"
        );
    }
}
