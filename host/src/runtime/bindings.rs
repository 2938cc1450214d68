//! The one `bindgen!` of the host: Rust types for the WIT package
//! `weft:runtime`, with the host types behind its resources. Generated types
//! stay inside `runtime`.

wasmtime::component::bindgen!({
    world: "task-worker",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "weft:runtime/graph.graph": super::resources::GraphResource,
        "weft:runtime/variable.variable": super::resources::VariableResource,
        "weft:runtime/session.session": super::resources::SessionResource,
    },
});

pub use weft::runtime::{device, graph, session, types, variable};
