//! Sessions (`tf.Session`): running a graph on a private local engine or on
//! a task of the cluster.

use crate::error::Result;
use crate::graph::{Graph, Op, Output};
use crate::tensor::Tensor;
use crate::wit::session as raw;

/// Options for [`Session::with_options`].
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Fail runs that wait longer than this for tasks to come up.
    pub timeout_ms: Option<u64>,
    /// Put unconstrained ops on the session's own task (TensorFlow 2's rule)
    /// instead of the cluster's first task (TensorFlow 1's).
    pub place_on_own_task: bool,
}

/// One node's execution in a traced run.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStats {
    /// Node name; `_SOURCE` marks the start of a device's work.
    pub node_name: String,
    /// Start, in microseconds since the Unix epoch.
    pub start_micros: u64,
    /// Duration in microseconds.
    pub duration_micros: u64,
}

/// The nodes one device ran in a traced run.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceStats {
    /// Device name, e.g. `/job:local/replica:0/task:0/device:CPU:0`.
    pub device: String,
    /// Nodes in the order they ran.
    pub nodes: Vec<NodeStats>,
}

/// What a run returns.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// One value per fetch, in order.
    pub values: Vec<Tensor>,
    /// Per-device step stats, if the run was traced.
    pub step_stats: Vec<DeviceStats>,
}

impl RunOutput {
    /// The step stats as Chrome trace JSON (open it in Perfetto or
    /// `chrome://tracing`): one process per device, one slice per node.
    pub fn chrome_trace_json(&self) -> String {
        fn escape(s: &str) -> String {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out
        }
        let mut events = Vec::new();
        for (pid, device) in self.step_stats.iter().enumerate() {
            events.push(format!(
                r#"{{"name":"process_name","ph":"M","pid":{pid},"tid":0,"args":{{"name":"{}"}}}}"#,
                escape(&device.device)
            ));
            for n in &device.nodes {
                events.push(format!(
                    r#"{{"name":"{}","cat":"op","ph":"X","ts":{},"dur":{},"pid":{pid},"tid":0}}"#,
                    escape(&n.node_name),
                    n.start_micros,
                    n.duration_micros.max(1)
                ));
            }
        }
        format!(r#"{{"traceEvents":[{}],"displayTimeUnit":"ms"}}"#, events.join(","))
    }
}

/// A session on a graph.
pub struct Session {
    raw: raw::Session,
}

impl Session {
    /// A session on a private in-process engine: its variables are its own,
    /// like a bare `tf.Session()`.
    pub fn local(graph: &Graph) -> Result<Self> {
        Self::new("local", graph)
    }

    /// A session on `target`: `""` for this program's task, a task like
    /// `/job:worker/task:0`, `grpc://host:port`, or `local`.
    pub fn new(target: &str, graph: &Graph) -> Result<Self> {
        Self::with_options(target, graph, SessionOptions::default())
    }

    /// [`Session::new`] with options.
    pub fn with_options(target: &str, graph: &Graph, options: SessionOptions) -> Result<Self> {
        let opts = raw::SessionOptions { timeout_ms: options.timeout_ms, place_on_own_task: options.place_on_own_task };
        Ok(Session { raw: raw::Session::open(target, &graph.raw, opts)? })
    }

    /// The device `op` runs on under this session's placement (TensorFlow
    /// resolves it when it places the graph), e.g.
    /// `/job:ps/replica:0/task:0/device:CPU:0`.
    pub fn device_of(&self, op: impl Into<Op>) -> Result<String> {
        Ok(self.raw.device_of(op.into().0)?)
    }

    /// The resolved target, e.g. `local` or `/job:localhost/replica:0/task:0`.
    pub fn target(&self) -> String {
        self.raw.target()
    }

    /// Computes one output (`sess.run(x)`).
    pub fn fetch(&self, x: impl Into<Output>) -> Result<Tensor> {
        let mut out = self.runner().fetch(x).run()?;
        Ok(out.values.remove(0))
    }

    /// Runs an op for its effects (`sess.run(op)`).
    pub fn run(&self, op: impl Into<Op>) -> Result<()> {
        self.runner().target(op).run().map(drop)
    }

    /// Starts a run with several fetches, feeds, targets or tracing.
    pub fn runner(&self) -> Runner<'_> {
        Runner {
            session: self,
            fetches: Vec::new(),
            feeds: Vec::new(),
            targets: Vec::new(),
            trace: false,
            timeout_ms: None,
        }
    }
}

/// One run being put together: `sess.runner().feed(x, t).fetch(y).run()`.
pub struct Runner<'s> {
    session: &'s Session,
    fetches: Vec<raw::Output>,
    feeds: Vec<raw::Feed>,
    targets: Vec<u32>,
    trace: bool,
    timeout_ms: Option<u64>,
}

impl Runner<'_> {
    /// Adds an output to compute.
    pub fn fetch(mut self, x: impl Into<Output>) -> Self {
        self.fetches.push(x.into().raw());
        self
    }

    /// Replaces `x` (usually a placeholder) with `value` for this run.
    pub fn feed(mut self, x: Output, value: impl Into<Tensor>) -> Self {
        self.feeds.push(raw::Feed { target: x.raw(), value: value.into().into_raw() });
        self
    }

    /// Adds an op to run for its effects.
    pub fn target(mut self, op: impl Into<Op>) -> Self {
        self.targets.push(op.into().0);
        self
    }

    /// Records step stats (`RunOptions(trace_level=FULL_TRACE)`).
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// Fails this run with `deadline-exceeded` after `ms` milliseconds,
    /// overriding the session's timeout (`RunOptions(timeout_in_ms=...)`).
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Runs the step.
    pub fn run(self) -> Result<RunOutput> {
        let options = raw::RunOptions {
            trace_level: if self.trace { raw::TraceLevel::Full } else { raw::TraceLevel::None },
            timeout_ms: self.timeout_ms,
        };
        let out = self.session.raw.run(&self.fetches, &self.feeds, &self.targets, options)?;
        Ok(RunOutput {
            values: out.values.into_iter().map(Tensor::from_raw).collect(),
            step_stats: out
                .step_stats
                .into_iter()
                .map(|d| DeviceStats {
                    device: d.device,
                    nodes: d
                        .nodes
                        .into_iter()
                        .map(|n| NodeStats {
                            node_name: n.node_name,
                            start_micros: n.start_micros,
                            duration_micros: n.duration_micros,
                        })
                        .collect(),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrome_trace_has_one_process_per_device_and_escapes_names() {
        let out = RunOutput {
            values: Vec::new(),
            step_stats: vec![DeviceStats {
                device: "/job:local/replica:0/task:0/device:CPU:0".into(),
                nodes: vec![
                    NodeStats { node_name: "_SOURCE".into(), start_micros: 10, duration_micros: 0 },
                    NodeStats { node_name: "we\"ird".into(), start_micros: 12, duration_micros: 3 },
                ],
            }],
        };
        let json = out.chrome_trace_json();
        assert!(json.starts_with(r#"{"traceEvents":[{"name":"process_name","ph":"M","pid":0"#), "{json}");
        assert!(json.contains(r#""args":{"name":"/job:local/replica:0/task:0/device:CPU:0"}"#), "{json}");
        assert!(json.contains(r#"{"name":"we\"ird","cat":"op","ph":"X","ts":12,"dur":3,"pid":0,"tid":0}"#), "{json}");
    }
}
