//! The plan as the areas build it: steps with the steps they wait for, and which step each
//! node's readiness waits for so that later areas can depend on it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::cluster::Step;

/// A step and the indices of the steps it waits for (always earlier in the plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// The step.
    #[serde(flatten)]
    pub step: Step,
    /// Indices into [`Plan::steps`] of the steps that must finish first.
    pub after: Vec<usize>,
}

/// An ordered list of steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Steps in an order that respects their dependencies.
    pub steps: Vec<PlannedStep>,
    /// Why the plan must not run without `--force`: each names what would be lost.
    pub blocked: Vec<String>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.blocked.is_empty()
    }

    pub(crate) fn push(&mut self, step: Step, after: impl IntoIterator<Item = Option<usize>>) -> usize {
        let mut after: Vec<usize> = after.into_iter().flatten().collect();
        after.sort_unstable();
        after.dedup();
        self.steps.push(PlannedStep { step, after });
        self.steps.len() - 1
    }
}

/// Which step each node's readiness waits for, as the areas plan it: the index of the step
/// after which its engine answers, the registry image is on it, it is in the swarm, and its
/// role and labels are set (absent: nothing to wait for). `fresh` nodes are about to be made
/// (again), so nothing observed on them counts.
#[derive(Debug, Default)]
pub(crate) struct Done<'a> {
    pub(crate) fresh: BTreeSet<&'a str>,
    pub(crate) engine: BTreeMap<&'a str, usize>,
    pub(crate) image: BTreeMap<&'a str, usize>,
    pub(crate) joined: BTreeMap<&'a str, usize>,
    pub(crate) configured: BTreeMap<&'a str, usize>,
    /// The swarm's initialisation, if it is made anew.
    pub(crate) init: Option<usize>,
    /// The last manager's join (managers join one after another), or the init.
    pub(crate) last_manager: Option<usize>,
    /// The registry data's move to the registry's node, and the node it leaves.
    pub(crate) moved: Option<usize>,
    pub(crate) moved_from: Option<String>,
}

impl Done<'_> {
    pub(crate) fn engine(&self, node: &str) -> Option<usize> {
        self.engine.get(node).copied()
    }
    pub(crate) fn image(&self, node: &str) -> Option<usize> {
        self.image.get(node).copied()
    }
}
