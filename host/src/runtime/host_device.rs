//! The WIT `device` interface: device strings, device scopes, task identity.

use wasmtime::component::Resource;

use super::bindings::{device as wd, types::Error as WitError};
use super::convert::wit;
use super::resources::GraphResource;
use super::state::StoreState;
use crate::device::DeviceSpec;

impl wd::Host for StoreState {
    async fn parse(&mut self, spec: String) -> wasmtime::Result<Result<wd::DeviceSpec, WitError>> {
        Ok(wit(DeviceSpec::parse(&spec).map(Into::into)))
    }

    async fn to_string(&mut self, spec: wd::DeviceSpec) -> wasmtime::Result<String> {
        Ok(DeviceSpec::from(spec).to_string())
    }

    async fn merge(&mut self, outer: wd::DeviceSpec, inner: wd::DeviceSpec) -> wasmtime::Result<wd::DeviceSpec> {
        Ok(DeviceSpec::from(outer).merge(&inner.into()).into())
    }

    async fn push_scope(&mut self, g: Resource<GraphResource>, spec: String) -> wasmtime::Result<Result<(), WitError>> {
        let graph = self.table.get(&g)?;
        Ok(wit(DeviceSpec::parse(&spec).and_then(|s| graph.lock().push_device_scope(&s))))
    }

    async fn pop_scope(&mut self, g: Resource<GraphResource>) -> wasmtime::Result<Result<(), WitError>> {
        Ok(wit(self.table.get(&g)?.lock().pop_device_scope()))
    }

    async fn identity(&mut self) -> wasmtime::Result<wd::TaskIdentity> {
        let task = &self.task;
        Ok(wd::TaskIdentity {
            job: task.id().job.clone(),
            task: task.id().index,
            cluster: task
                .cluster()
                .jobs()
                .iter()
                .map(|(name, tasks)| wd::Job { name: name.clone(), tasks: tasks.clone() })
                .collect(),
        })
    }
}
