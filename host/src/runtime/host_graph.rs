//! The WIT `graph` interface: programs build graphs on the host.

use wasmtime::component::Resource;

use super::bindings::{graph as wg, types::Error as WitError};
use super::convert::{attr_from_wit, output_type_to_wit, wit};
use super::resources::GraphResource;
use super::state::StoreState;
use crate::device::DeviceSpec;
use crate::error::Result;
use crate::graph::{Attrs, NameRequest, NodeRequest, OpType, Output};

fn add_op(graph: &GraphResource, spec: wg::OpSpec) -> Result<u32> {
    let op = OpType::from_name(&spec.op_type)?;
    let mut attrs = Attrs::default();
    for a in spec.attrs {
        attrs.set(&a.name, attr_from_wit(a.value)?);
    }
    let device = spec.device.as_deref().map(DeviceSpec::parse).transpose()?;
    let req = NodeRequest {
        op,
        name: spec.name.map_or(NameRequest::Default, NameRequest::Unique),
        inputs: spec.inputs.into_iter().map(Into::into).collect(),
        control_inputs: spec.control_inputs,
        attrs,
        device,
    };
    graph.lock().add(req)
}

impl wg::Host for StoreState {}

impl wg::HostGraph for StoreState {
    async fn new(&mut self) -> wasmtime::Result<Resource<GraphResource>> {
        Ok(self.table.push(GraphResource::charged_to(self.limits.budget().clone()))?)
    }

    async fn add_op(
        &mut self,
        g: Resource<GraphResource>,
        spec: wg::OpSpec,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        let graph = self.table.get(&g)?.clone();
        Ok(wit(self.metered(|| add_op(&graph, spec))))
    }

    async fn output_type(
        &mut self,
        g: Resource<GraphResource>,
        out: wg::Output,
    ) -> wasmtime::Result<Result<wg::OutputType, WitError>> {
        let graph = self.table.get(&g)?.lock();
        Ok(wit(graph.output_type(out.into()).map(output_type_to_wit)))
    }

    async fn operations(&mut self, g: Resource<GraphResource>) -> wasmtime::Result<Vec<wg::Operation>> {
        let graph = self.table.get(&g)?.lock();
        Ok(graph
            .nodes()
            .iter()
            .map(|n| wg::Operation {
                id: n.id,
                name: n.name.clone(),
                op_type: n.op.name().to_string(),
                device: n.device.to_string(),
                outputs: n.outputs.iter().map(output_type_to_wit).collect(),
            })
            .collect())
    }

    async fn node_by_name(&mut self, g: Resource<GraphResource>, name: String) -> wasmtime::Result<Option<u32>> {
        Ok(self.table.get(&g)?.lock().find(&name))
    }

    async fn push_name_scope(&mut self, g: Resource<GraphResource>, name: String) -> wasmtime::Result<String> {
        Ok(self.table.get(&g)?.lock().push_name_scope(&name))
    }

    async fn pop_name_scope(&mut self, g: Resource<GraphResource>) -> wasmtime::Result<Result<(), WitError>> {
        Ok(wit(self.table.get(&g)?.lock().pop_name_scope()))
    }

    async fn push_control_dependencies(
        &mut self,
        g: Resource<GraphResource>,
        nodes: Vec<u32>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(wit(self.table.get(&g)?.lock().push_control_dependencies(nodes)))
    }

    async fn pop_control_dependencies(&mut self, g: Resource<GraphResource>) -> wasmtime::Result<Result<(), WitError>> {
        Ok(wit(self.table.get(&g)?.lock().pop_control_dependencies()))
    }

    async fn gradients(
        &mut self,
        g: Resource<GraphResource>,
        ys: Vec<wg::Output>,
        xs: Vec<wg::Output>,
        grad_ys: Option<Vec<wg::Output>>,
        stop_gradients: Vec<wg::Output>,
    ) -> wasmtime::Result<Result<Vec<Option<wg::Output>>, WitError>> {
        let conv = |v: Vec<wg::Output>| v.into_iter().map(Into::into).collect::<Vec<Output>>();
        let (ys, xs, stop) = (conv(ys), conv(xs), conv(stop_gradients));
        let grad_ys = grad_ys.map(conv);
        let graph = self.table.get(&g)?.clone();
        let result = self.metered(|| graph.lock().gradients(&ys, &xs, grad_ys.as_deref(), &stop));
        Ok(wit(result.map(|gs| gs.into_iter().map(|g| g.map(Into::into)).collect())))
    }

    async fn drop(&mut self, g: Resource<GraphResource>) -> wasmtime::Result<()> {
        self.table.delete(g)?;
        Ok(())
    }
}
