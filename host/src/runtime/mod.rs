//! wasmtime
