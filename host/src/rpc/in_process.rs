//! Task servers of this process, found by their address: a master in the
//! same process (the tasks of one `weft launch`, the test harness's
//! clusters) runs their partitions by a call instead of over gRPC. Tensors
//! pass by reference, so nothing is copied or encoded (nor charged again to
//! the task: the caller holds them). Registration (its size limit and its
//! checks), the checks of each step's inputs, the CPU allowance, the task's
//! tensor budget for what a step allocates, and cancellation are those of
//! the network path ([`ServedTask::run_in_process`]). A task is unlisted
//! when its server begins to shut down; its calls then fail `unavailable`,
//! and those running stop at their next kernel. A restart lists a new
//! incarnation, so masters see it as they would over the network. `WEFT_IN_PROCESS=0`
//! sends every call over gRPC, and so does a client with credentials or TLS
//! (those are for hosts of experiments, which are never listed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::ServedTask;
use crate::cluster::TaskId;

type Listed = HashMap<String, (TaskId, Weak<ServedTask>)>;

fn listed() -> std::sync::MutexGuard<'static, Listed> {
    static LISTED: OnceLock<Mutex<Listed>> = OnceLock::new();
    LISTED.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether masters use the in-process path (`WEFT_IN_PROCESS=0` turns it off).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("WEFT_IN_PROCESS").map_or(true, |v| v != "0"))
}

/// A task's listing; dropping it unlists the task.
#[derive(Debug)]
pub struct Listing {
    address: String,
    served: Weak<ServedTask>,
}

/// Lists `served` under `address` (the task's address in its cluster spec)
/// until the listing is dropped.
pub fn list(address: &str, served: &Arc<ServedTask>) -> Listing {
    let weak = Arc::downgrade(served);
    listed().insert(address.to_string(), (served.task().id().clone(), weak.clone()));
    Listing { address: address.to_string(), served: weak }
}

impl Drop for Listing {
    fn drop(&mut self) {
        {
            let mut listed = listed();
            // A restart on the same address may have listed its own start since.
            if listed.get(&self.address).is_some_and(|(_, w)| w.ptr_eq(&self.served)) {
                listed.remove(&self.address);
            }
        }
        if let Some(served) = self.served.upgrade() {
            served.stop();
        }
    }
}

/// Task `task` at `address`, if this process serves it now.
pub fn find(address: &str, task: &TaskId) -> Option<Arc<ServedTask>> {
    if !enabled() {
        return None;
    }
    let listed = listed();
    let (id, served) = listed.get(address)?;
    (id == task).then(|| served.upgrade()).flatten()
}
