//! Host-side state behind the WIT resources a program holds.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::exec::Executor;
use crate::graph::{Graph, VariableNodes};

/// A graph a program builds; sessions on it share it.
#[derive(Debug, Clone)]
pub struct GraphResource(pub Arc<Mutex<Graph>>);

impl GraphResource {
    /// An empty graph whose nodes count against `budget` (the program's
    /// memory) until the last session on it is gone.
    pub fn charged_to(budget: Arc<crate::budget::ByteBudget>) -> Self {
        GraphResource(Arc::new(Mutex::new(Graph::charged_to(budget))))
    }

    /// Locks the graph. A poisoned lock only means a panic elsewhere; the
    /// graph is append-only and stays consistent.
    pub fn lock(&self) -> MutexGuard<'_, Graph> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A variable declared in a graph.
#[derive(Debug)]
pub struct VariableResource {
    /// The graph it lives in.
    pub graph: GraphResource,
    /// Its nodes.
    pub nodes: VariableNodes,
    /// Its node name.
    pub name: String,
}

/// A session: an executor bound to a graph.
#[derive(Debug)]
pub struct SessionResource {
    /// The graph it runs.
    pub graph: GraphResource,
    /// Where it runs.
    pub executor: Executor,
    /// The canonical target name.
    pub target: String,
    /// How long a run may wait for remote tasks.
    pub timeout: Option<std::time::Duration>,
}
