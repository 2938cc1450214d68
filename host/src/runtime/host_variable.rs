//! The WIT `variable` interface: `tf.Variable` and its assign ops.

use wasmtime::component::Resource;

use super::bindings::{graph::Output as WitOutput, types::Error as WitError, variable as wv};
use super::convert::{tensor_from_wit, wit};
use super::resources::{GraphResource, VariableResource};
use super::state::StoreState;
use crate::device::DeviceSpec;
use crate::error::Result;
use crate::graph::{NameRequest, NodeRequest, OpType, Operand, Output, VariableDecl};

fn operand(o: wv::Operand) -> Result<Operand> {
    Ok(match o {
        wv::Operand::Literal(t) => Operand::Literal(tensor_from_wit(&t)?),
        wv::Operand::Node(out) => Operand::Node(out.into()),
    })
}

fn declare(graph: &GraphResource, initial: wv::Operand, options: wv::VariableOptions) -> Result<VariableResource> {
    let decl = VariableDecl {
        name: options.name,
        device: options.device.as_deref().map(DeviceSpec::parse).transpose()?,
        trainable: options.trainable,
    };
    let initial = operand(initial)?;
    let mut g = graph.lock();
    let nodes = g.declare_variable(initial, decl)?;
    let name = g.node(nodes.var)?.name.clone();
    Ok(VariableResource { graph: graph.clone(), nodes, name })
}

impl StoreState {
    fn assign(
        &mut self,
        v: &Resource<VariableResource>,
        op: OpType,
        value: wv::Operand,
    ) -> wasmtime::Result<Result<WitOutput, WitError>> {
        let var = self.table.get(v)?;
        let result = operand(value).and_then(|value| var.graph.lock().assign_op(op, var.nodes.var, value));
        Ok(wit(result.map(Into::into)))
    }
}

impl wv::Host for StoreState {
    async fn global_variables_initializer(
        &mut self,
        g: Resource<GraphResource>,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        Ok(wit(self.table.get(&g)?.lock().global_variables_initializer()))
    }

    async fn report_uninitialized_variables(
        &mut self,
        g: Resource<GraphResource>,
    ) -> wasmtime::Result<Result<WitOutput, WitError>> {
        Ok(wit(self.table.get(&g)?.lock().report_uninitialized_variables().map(Into::into)))
    }
}

impl wv::HostVariable for StoreState {
    async fn create(
        &mut self,
        g: Resource<GraphResource>,
        initial_value: wv::Operand,
        options: wv::VariableOptions,
    ) -> wasmtime::Result<Result<Resource<VariableResource>, WitError>> {
        match declare(self.table.get(&g)?, initial_value, options) {
            Ok(var) => Ok(Ok(self.table.push(var)?)),
            Err(e) => Ok(wit(Err(e))),
        }
    }

    async fn name(&mut self, v: Resource<VariableResource>) -> wasmtime::Result<String> {
        Ok(self.table.get(&v)?.name.clone())
    }

    async fn node(&mut self, v: Resource<VariableResource>) -> wasmtime::Result<WitOutput> {
        Ok(Output::of(self.table.get(&v)?.nodes.var).into())
    }

    async fn value(&mut self, v: Resource<VariableResource>) -> wasmtime::Result<WitOutput> {
        Ok(Output::of(self.table.get(&v)?.nodes.read).into())
    }

    async fn initializer(&mut self, v: Resource<VariableResource>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&v)?.nodes.initializer)
    }

    async fn assign(
        &mut self,
        v: Resource<VariableResource>,
        value: wv::Operand,
    ) -> wasmtime::Result<Result<WitOutput, WitError>> {
        StoreState::assign(self, &v, OpType::Assign, value)
    }

    async fn assign_add(
        &mut self,
        v: Resource<VariableResource>,
        delta: wv::Operand,
    ) -> wasmtime::Result<Result<WitOutput, WitError>> {
        StoreState::assign(self, &v, OpType::AssignAdd, delta)
    }

    async fn assign_sub(
        &mut self,
        v: Resource<VariableResource>,
        delta: wv::Operand,
    ) -> wasmtime::Result<Result<WitOutput, WitError>> {
        StoreState::assign(self, &v, OpType::AssignSub, delta)
    }

    async fn is_initialized(&mut self, v: Resource<VariableResource>) -> wasmtime::Result<Result<WitOutput, WitError>> {
        let var = self.table.get(&v)?;
        let req = NodeRequest::new(OpType::IsVariableInitialized)
            .named(NameRequest::Unique("IsVariableInitialized".into()))
            .inputs([Output::of(var.nodes.var)]);
        Ok(wit(var.graph.lock().add(req).map(|id| Output::of(id).into())))
    }

    async fn drop(&mut self, v: Resource<VariableResource>) -> wasmtime::Result<()> {
        self.table.delete(v)?;
        Ok(())
    }
}
