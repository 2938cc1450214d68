//! The one `bindgen!` of the host: Rust types for the WIT package
//! `weft:runtime`, with the host types behind its resources and the
//! hand-written `types` interface ([`wit_types`]). Generated types
//! stay inside `runtime`.

/// Written by hand; see its docs (a child of this module so that the
/// generated `pub use` of it stays inside `runtime`).
#[path = "wit_types.rs"]
pub mod wit_types;

wasmtime::component::bindgen!({
    world: "task-worker",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "weft:runtime/types": wit_types,
        "weft:runtime/graph.graph": super::resources::GraphResource,
        "weft:runtime/variable.variable": super::resources::VariableResource,
        "weft:runtime/session.session": super::resources::SessionResource,
    },
});

pub use weft::runtime::{device, graph, session, types, variable};
