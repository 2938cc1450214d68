//! Routes of a step's tensors between tasks (TensorFlow's send/recv pairs):
//! a tensor one remote task produces and another consumes goes straight
//! from the one to the other, not through the session's task.
//!
//! A plan gives each remote partition a [`Route`]: which of its outputs it
//! delivers to which tasks (before it answers), which it leaves out of its
//! answer (the master needs them nowhere), and which of its inputs another
//! task delivers. Stages run one after another, so a delivery is complete
//! before any partition that takes it is called: nothing ever waits for a
//! tensor.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::PartitionDef;
use crate::cluster::TaskId;
use crate::error::{Error, Result};
use crate::graph::Output;

/// Calls of one step that may take one delivered tensor, at most.
pub const MAX_USES: u32 = 1 << 16;

/// Output `output` of a partition goes to `task`, where `uses` partitions
/// of the step take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The output's index in the partition's outputs.
    pub output: usize,
    /// The task it goes to.
    pub task: TaskId,
    /// How many partitions of the step there take it.
    pub uses: u32,
}

/// Where a remote partition's tensors come from and go, besides the master.
/// The default sends every input from the master and returns every output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Outputs (indices, ascending) the master does not get back.
    pub unreturned: Vec<usize>,
    /// Outputs delivered straight to tasks.
    pub deliveries: Vec<Delivery>,
    /// Inputs (indices, ascending) another task delivers, which the master
    /// does not send.
    pub delivered_inputs: Vec<usize>,
}

impl Route {
    /// Whether output `i` comes back to the master.
    pub fn returns(&self, i: usize) -> bool {
        self.unreturned.binary_search(&i).is_err()
    }

    /// Whether input `i` is delivered by another task.
    pub fn is_delivered(&self, i: usize) -> bool {
        self.delivered_inputs.binary_search(&i).is_ok()
    }

    /// The outputs of `def` that come back to the master, in order.
    pub fn returned<'a>(&'a self, def: &'a PartitionDef) -> impl Iterator<Item = Output> + 'a {
        def.outputs.iter().enumerate().filter(|(i, _)| self.returns(*i)).map(|(_, o)| *o)
    }

    /// The inputs of `def` the master sends, in order.
    pub fn sent<'a>(&'a self, def: &'a PartitionDef) -> impl Iterator<Item = Output> + 'a {
        def.inputs.iter().enumerate().filter(|(i, _)| !self.is_delivered(*i)).map(|(_, o)| *o)
    }

    /// This route, if it fits `def` (a route from the network): indices in
    /// range and ascending, each output delivered once per task, uses
    /// between 1 and [`MAX_USES`].
    pub fn checked(self, def: &PartitionDef) -> Result<Self> {
        let ascending = |what: &str, v: &[usize], n: usize| -> Result<()> {
            if v.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Error::invalid(format!("{what} are not in ascending order")));
            }
            match v.last() {
                Some(&i) if i >= n => Err(Error::invalid(format!("{what} name index {i}, past the {n} there are"))),
                _ => Ok(()),
            }
        };
        ascending("unreturned outputs", &self.unreturned, def.outputs.len())?;
        ascending("delivered inputs", &self.delivered_inputs, def.inputs.len())?;
        let mut seen = HashSet::new();
        for d in &self.deliveries {
            if d.output >= def.outputs.len() {
                return Err(Error::invalid(format!(
                    "a delivery names output {}, past the {} there are",
                    d.output,
                    def.outputs.len()
                )));
            }
            if !(1..=MAX_USES).contains(&d.uses) {
                return Err(Error::invalid(format!(
                    "a delivery to {} is for {} uses (1 to {MAX_USES})",
                    d.task, d.uses
                )));
            }
            if !seen.insert((d.output, &d.task)) {
                return Err(Error::invalid(format!("output {} is delivered to {} twice", d.output, d.task)));
            }
        }
        Ok(self)
    }
}

/// The routes of a step's partitions, each given as its stage, the task it
/// runs on (`None`: this process) and its definition; `fetched` are the
/// step's fetches. An output of a remote partition goes to each remote task
/// that consumes it (once per task, its own task included) and back to the
/// master only if this process consumes it or the step fetches it.
///
/// A variable repeated into several partitions of its task is an output of
/// each (read when that partition ends). A consumer gets it from the latest
/// of them in a stage before its own: the value it would get through the
/// master, whose later outputs replace earlier ones.
pub(super) fn routes(parts: &[(usize, Option<&TaskId>, &PartitionDef)], fetched: &HashSet<Output>) -> Vec<Route> {
    let mut producers: HashMap<Output, Vec<(usize, usize)>> = HashMap::new();
    for (p, (_, _, def)) in parts.iter().enumerate() {
        for (i, o) in def.outputs.iter().enumerate() {
            producers.entry(*o).or_default().push((p, i));
        }
    }
    let mut routes = vec![Route::default(); parts.len()];
    // Per produced output: tasks consuming it (with their partition count),
    // and whether this process does.
    let mut remote_uses: BTreeMap<(usize, usize), BTreeMap<&TaskId, u32>> = BTreeMap::new();
    let mut used_here: HashSet<(usize, usize)> = HashSet::new();
    for (c, &(stage, task, def)) in parts.iter().enumerate() {
        for (i, o) in def.inputs.iter().enumerate() {
            // Inputs no partition produces are fed: the master sends them.
            let Some(made) = producers.get(o) else { continue };
            let Some(&(p, j)) = made.iter().filter(|(p, _)| parts[*p].0 < stage).max_by_key(|(p, _)| parts[*p].0)
            else {
                continue;
            };
            match (parts[p].1, task) {
                (Some(_), Some(to)) => {
                    *remote_uses.entry((p, j)).or_default().entry(to).or_default() += 1;
                    routes[c].delivered_inputs.push(i);
                }
                _ => {
                    used_here.insert((p, j));
                }
            }
        }
    }
    for ((p, j), tasks) in remote_uses {
        for (task, uses) in tasks {
            routes[p].deliveries.push(Delivery { output: j, task: task.clone(), uses });
        }
    }
    for (p, &(_, task, def)) in parts.iter().enumerate() {
        if task.is_none() {
            continue;
        }
        for (j, o) in def.outputs.iter().enumerate() {
            if !used_here.contains(&(p, j)) && !fetched.contains(o) {
                routes[p].unreturned.push(j);
            }
        }
    }
    for r in &mut routes {
        r.delivered_inputs.sort_unstable();
        r.delivered_inputs.dedup();
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(inputs: &[u32], outputs: &[u32]) -> PartitionDef {
        PartitionDef {
            nodes: Vec::new(),
            inputs: inputs.iter().map(|&n| Output::of(n)).collect(),
            input_types: Vec::new(),
            outputs: outputs.iter().map(|&n| Output::of(n)).collect(),
        }
    }

    #[test]
    fn a_tensor_between_two_remote_tasks_goes_straight_and_only_what_the_master_needs_comes_back() {
        let (ps, w0, w1) = (TaskId::new("ps", 0), TaskId::new("worker", 0), TaskId::new("worker", 1));
        // Stage 0: the ps reads w (node 1). Stage 1: each worker uses it
        // (nodes 2, 3); worker 1 again at stage 2. Stage 3: here sums.
        let read = def(&[], &[1]);
        let tower0 = def(&[1], &[2]);
        let tower1 = def(&[1], &[3]);
        let tower1_again = def(&[1, 3], &[4]);
        let sum = def(&[2, 4], &[5]);
        let parts = [
            (0, Some(&ps), &read),
            (1, Some(&w0), &tower0),
            (1, Some(&w1), &tower1),
            (2, Some(&w1), &tower1_again),
            (3, None, &sum),
        ];
        let fetched = HashSet::from([Output::of(5), Output::of(2)]);
        let r = routes(&parts, &fetched);
        assert_eq!(
            r[0].deliveries,
            vec![Delivery { output: 0, task: w0.clone(), uses: 1 }, Delivery { output: 0, task: w1.clone(), uses: 2 }]
        );
        assert_eq!(r[0].unreturned, vec![0], "nothing here needs w");
        assert_eq!((r[1].delivered_inputs.clone(), r[1].unreturned.clone()), (vec![0], vec![]));
        assert_eq!(r[2].deliveries, vec![Delivery { output: 0, task: w1.clone(), uses: 1 }], "to its own task");
        assert_eq!(r[2].unreturned, vec![0]);
        assert_eq!(r[3].delivered_inputs, vec![0, 1]);
        assert_eq!(r[4], Route::default(), "this process's partition gets everything from the master");
        assert_eq!(r[1].returned(&tower0).collect::<Vec<_>>(), vec![Output::of(2)]);
        assert_eq!(r[3].sent(&tower1_again).count(), 0);
    }

    #[test]
    fn a_variable_repeated_into_later_partitions_is_delivered_from_the_latest_before_its_reader() {
        let (ps, w) = (TaskId::new("ps", 0), TaskId::new("worker", 0));
        // Variable 1 on the ps: its own partition (stage 0, it is read on the
        // worker at stage 1), and repeated into the ps's update at stage 2,
        // whose outputs list it too; the worker reads it again at stage 3.
        let own = def(&[], &[1]);
        let read_there = def(&[1], &[2]);
        let update = def(&[2], &[1, 3]);
        let read_again = def(&[1], &[4]);
        let parts =
            [(0, Some(&ps), &own), (1, Some(&w), &read_there), (2, Some(&ps), &update), (3, Some(&w), &read_again)];
        let r = routes(&parts, &HashSet::from([Output::of(3), Output::of(4)]));
        assert_eq!(r[0].deliveries, vec![Delivery { output: 0, task: w.clone(), uses: 1 }], "before the update");
        assert_eq!(r[2].deliveries, vec![Delivery { output: 0, task: w.clone(), uses: 1 }], "after it");
        assert_eq!((r[0].unreturned.clone(), r[2].unreturned.clone()), (vec![0], vec![0]));
        assert_eq!((r[2].delivered_inputs.clone(), r[3].delivered_inputs.clone()), (vec![0], vec![0]));
    }

    #[test]
    fn a_route_from_the_network_must_fit_its_partition() {
        let d = def(&[1, 2], &[3]);
        let w = TaskId::new("worker", 0);
        let ok = Route {
            unreturned: vec![0],
            deliveries: vec![Delivery { output: 0, task: w.clone(), uses: 1 }],
            delivered_inputs: vec![0, 1],
        };
        assert!(ok.clone().checked(&d).is_ok());
        let bad = [
            Route { unreturned: vec![1], ..ok.clone() },
            Route { delivered_inputs: vec![1, 0], ..ok.clone() },
            Route { delivered_inputs: vec![0, 0], ..ok.clone() },
            Route { deliveries: vec![Delivery { output: 1, task: w.clone(), uses: 1 }], ..ok.clone() },
            Route { deliveries: vec![Delivery { output: 0, task: w.clone(), uses: 0 }], ..ok.clone() },
            Route { deliveries: vec![ok.deliveries[0].clone(), ok.deliveries[0].clone()], ..ok.clone() },
        ];
        for route in bad {
            let e = route.clone().checked(&d).unwrap_err();
            assert_eq!(e.code(), crate::error::Code::InvalidArgument, "{route:?}: {e}");
        }
    }
}
