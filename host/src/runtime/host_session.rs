//! The WIT `session` interface: opening sessions and running steps.

use std::time::Duration;

use wasmtime::component::Resource;

use super::bindings::{session as ws, types::Error as WitError};
use super::convert::{tensor_from_wit, tensor_to_wit, wit};
use super::resources::{GraphResource, SessionResource};
use super::state::StoreState;
use crate::error::Result;
use crate::exec::{RunRequest, RunResult};

async fn run(session: &mut SessionResource, req: RunRequest, timeout: Option<Duration>) -> Result<RunResult> {
    // Planning a run is host work for the program, whether or not it
    // succeeds (kernels meter themselves).
    let meter = req.meter.clone();
    let start = std::time::Instant::now();
    let step = session.executor.prepare(&session.graph.lock(), req);
    if let Some(m) = &meter {
        m.charge(start.elapsed());
    }
    session.executor.execute(step?, timeout.or(session.timeout)).await
}

fn to_wit(result: RunResult) -> ws::RunOutput {
    ws::RunOutput {
        values: result.values.iter().map(tensor_to_wit).collect(),
        step_stats: result
            .step_stats
            .into_iter()
            .map(|d| ws::DeviceStats {
                device: d.device,
                nodes: d
                    .nodes
                    .into_iter()
                    .map(|n| ws::NodeStats {
                        node_name: n.node_name,
                        start_micros: n.start_micros,
                        duration_micros: n.duration_micros,
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl ws::Host for StoreState {}

impl ws::HostSession for StoreState {
    async fn open(
        &mut self,
        target: String,
        g: Resource<GraphResource>,
        options: ws::SessionOptions,
    ) -> wasmtime::Result<Result<Resource<SessionResource>, WitError>> {
        let graph = self.table.get(&g)?.clone();
        match self.task.session_executor(&target, options.place_on_own_task) {
            Ok((executor, target)) => {
                let executor = executor.with_plan_budget(self.limits.budget().clone());
                let timeout = options.timeout_ms.map(std::time::Duration::from_millis);
                let session = SessionResource { graph, executor, target, timeout };
                Ok(Ok(self.table.push(session)?))
            }
            Err(e) => Ok(wit(Err(e))),
        }
    }

    async fn run(
        &mut self,
        s: Resource<SessionResource>,
        fetches: Vec<ws::Output>,
        feeds: Vec<ws::Feed>,
        targets: Vec<u32>,
        options: ws::RunOptions,
    ) -> wasmtime::Result<Result<ws::RunOutput, WitError>> {
        let feeds =
            match feeds.iter().map(|f| Ok((f.target.into(), tensor_from_wit(&f.value)?))).collect::<Result<Vec<_>>>() {
                Ok(feeds) => feeds,
                Err(e) => return Ok(wit(Err(e))),
            };
        let req = RunRequest {
            fetches: fetches.into_iter().map(Into::into).collect(),
            feeds,
            targets,
            trace: matches!(options.trace_level, ws::TraceLevel::Full),
            meter: Some(self.compute.clone()),
        };
        let timeout = options.timeout_ms.map(Duration::from_millis);
        let session = self.table.get_mut(&s)?;
        let result = run(session, req, timeout).await;
        if result.is_ok() {
            self.task.count_step();
        }
        Ok(wit(result.map(to_wit)))
    }

    async fn target(&mut self, s: Resource<SessionResource>) -> wasmtime::Result<String> {
        Ok(self.table.get(&s)?.target.clone())
    }

    async fn device_of(
        &mut self,
        s: Resource<SessionResource>,
        node: u32,
    ) -> wasmtime::Result<Result<String, WitError>> {
        let session = self.table.get(&s)?;
        let graph = session.graph.lock();
        Ok(wit(session.executor.device_of(&graph, node)))
    }

    async fn drop(&mut self, s: Resource<SessionResource>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}
