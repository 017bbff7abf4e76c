//! The executor: runs a [`Plan`] against real machines and engines.
//!
//! Steps whose dependencies are done run concurrently (node creation, engine waits, image
//! loading, worker joins); manager joins are chained by the planner. Each finished step is
//! recorded in the cluster's state before the next ones start, so an interrupted `up`
//! resumes from what is really there: the next observation sees the finished work and the
//! planner plans only the rest. On the first failure no new step starts, the running ones
//! finish, and that failure is returned.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::Instrument;

use crate::cluster::Progress;
use crate::cluster::Step;
use crate::converge::plan::Plan;
use crate::error::{Error, Result};
use crate::state::StepRecord;

/// What the executor needs from whatever carries steps out: run one, say how it went, and
/// keep the record of the run. [`Runtime`] is the real one; the tests below use a fake, so the
/// executor's rules are checked without any engine.
#[async_trait::async_trait]
pub trait StepRunner: Send + Sync + 'static {
    /// Carries out one step; a short detail for the progress line.
    async fn run_step(&self, step: &Step) -> Result<Option<String>>;
    /// Where progress goes.
    fn progress(&self) -> Arc<dyn Progress>;
    /// The driver's name, for errors about what it cannot do.
    fn driver_name(&self) -> String;
    /// Starts the run's record; returns the steps an earlier run finished if that run did not
    /// finish (it was interrupted or failed).
    fn begin_run(&self) -> Result<Vec<StepRecord>>;
    /// Records a finished step.
    fn step_finished(&self, step: &Step) -> Result<()>;
    /// Records that the whole plan ran.
    fn end_run(&self) -> Result<()>;
}

/// Executes `plan`, running independent steps concurrently, recording each finished step.
///
/// - A step starts once every step it depends on has finished.
/// - On the first failure no new step starts; the steps already running finish and are
///   recorded, and that first failure is returned.
/// - A step's error names its node.
/// - A resumed run (after one that was interrupted) redoes nothing the interrupted run did:
///   the plan comes from observing the cluster, so what was done is not in it. The record of
///   the interrupted run is read to say so.
pub async fn execute<R: StepRunner>(rt: Arc<R>, plan: &Plan) -> Result<()> {
    let n = plan.steps.len();
    let mut done = vec![false; n];
    let mut started = vec![false; n];
    let mut running = JoinSet::new();
    let mut failure: Option<Error> = None;
    let before = rt.begin_run()?;
    if !before.is_empty() {
        rt.progress().note(&format!(
            "resuming: the interrupted run had finished {} {}; lab looked at the cluster again and plans only what is still missing",
            before.len(),
            if before.len() == 1 { "step" } else { "steps" }
        ));
    }
    let driver = rt.driver_name();
    loop {
        if failure.is_none() {
            for (i, planned) in plan.steps.iter().enumerate() {
                if !started[i] && planned.after.iter().all(|&a| done[a]) {
                    started[i] = true;
                    let step = planned.step.clone();
                    let rt = rt.clone();
                    let driver = driver.clone();
                    let span = tracing::info_span!("step", node = step.node().unwrap_or("-"), step = %step);
                    running.spawn(
                        async move {
                            let progress = rt.progress();
                            progress.started(&step);
                            let t = Instant::now();
                            let r = through_elections(&*rt, &step)
                                .await
                                .map_err(|e| naming_node(e.for_driver(&driver), &step));
                            match &r {
                                Ok(detail) => progress.finished(&step, t.elapsed(), detail.as_deref()),
                                Err(e) => progress.failed(&step, t.elapsed(), e),
                            }
                            (i, r)
                        }
                        .instrument(span),
                    );
                }
            }
        }
        let Some(joined) = running.join_next().await else { break };
        let (i, result) = joined.map_err(|e| Error::op_caused("run a step", e))?;
        match result {
            Ok(_) => {
                done[i] = true;
                rt.step_finished(&plan.steps[i].step)?;
            }
            Err(e) => {
                if failure.is_none() {
                    failure = Some(e);
                }
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => rt.end_run(),
    }
}

/// How long a step that failed because the swarm had no leader for the moment is tried again.
const ELECTION_RETRY: Duration = Duration::from_secs(60);

/// What the swarm's managers answer while they elect a leader: right after a manager joins or
/// leaves, or on a machine too slow for Raft's heartbeats (four QEMU guests under TCG on 2
/// loaded cores lost their leader in the middle of `up`: "raft: failed to process the
/// request: node lost leader status").
const ELECTING: [&str; 3] = ["node lost leader status", "does not have a leader", "no elected cluster leader"];

/// Runs `step`, and runs it again (every 2 s, for at most [`ELECTION_RETRY`]) while it fails
/// only because the swarm is electing a leader: every step is safe to run again (an
/// interrupted `up` does just that), and the election ends by itself. Any other failure, or
/// the same one past the bound, is the step's.
async fn through_elections<R: StepRunner + ?Sized>(rt: &R, step: &Step) -> Result<Option<String>> {
    let start = tokio::time::Instant::now();
    loop {
        match rt.run_step(step).await {
            Err(e) if start.elapsed() < ELECTION_RETRY && ELECTING.iter().any(|m| e.to_string().contains(m)) => {
                rt.progress().note(&format!("{step}: the swarm has no leader for the moment ({e}); trying again"));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => return other,
        }
    }
}

/// A step's error names the step's node: an error that names none (the driver's, or one
/// from no single node) is put under it, keeping it as the cause.
fn naming_node(e: Error, step: &Step) -> Error {
    let Some(node) = step.node() else { return e };
    match e {
        Error::Node { .. } | Error::Timeout { .. } | Error::Input { .. } | Error::Locked { .. } => e,
        other => {
            let hint = other.hint().map(str::to_string);
            Error::Node {
                node: node.to_string(),
                step: step.to_string(),
                message: other.to_string(),
                hint,
                source: Some(Box::new(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::cluster::ModeRequest;
    use crate::cluster::Progress;
    use crate::converge::plan::tests::{apply, desired};
    use crate::converge::plan::{plan, Observed, PlannedStep};

    /// Progress that keeps the notes, and every step's events in the order they came.
    #[derive(Default)]
    struct Notes(Mutex<Vec<String>>, Mutex<Vec<String>>);
    impl Progress for Notes {
        fn started(&self, step: &Step) {
            self.1.lock().unwrap().push(format!("started {step}"));
        }
        fn finished(&self, step: &Step, _: Duration, detail: Option<&str>) {
            self.1.lock().unwrap().push(format!("finished {step}: {}", detail.unwrap_or("-")));
        }
        fn failed(&self, step: &Step, _: Duration, error: &Error) {
            self.1.lock().unwrap().push(format!("failed {step}: {error}"));
        }
        fn note(&self, message: &str) {
            self.0.lock().unwrap().push(message.to_string());
        }
    }

    /// How a fake step goes: after `ms`, succeed, or fail with the error `fail` makes.
    #[derive(Clone)]
    struct Behaviour {
        ms: u64,
        fail: Option<fn() -> Error>,
    }

    /// Steps that fail with their behaviour's error only this many times, then succeed.
    type Flaky = HashMap<String, usize>;

    /// A runner with no engine: each step waits and succeeds or fails as told, and the run's
    /// record is kept in memory, as the state file keeps it.
    #[derive(Default)]
    struct Fake {
        behaviour: HashMap<String, Behaviour>,
        started: Mutex<Vec<String>>,
        /// Steps running now, and the most that ever ran at once.
        running: Mutex<(usize, usize)>,
        record: Mutex<(Vec<StepRecord>, bool)>,
        notes: Arc<Notes>,
        flaky: Mutex<Flaky>,
    }

    #[async_trait::async_trait]
    impl StepRunner for Fake {
        async fn run_step(&self, step: &Step) -> Result<Option<String>> {
            self.started.lock().unwrap().push(step.to_string());
            let b = self.behaviour.get(&step.to_string()).cloned().unwrap_or(Behaviour { ms: 0, fail: None });
            {
                let mut r = self.running.lock().unwrap();
                r.0 += 1;
                r.1 = r.1.max(r.0);
            }
            tokio::time::sleep(Duration::from_millis(b.ms)).await;
            self.running.lock().unwrap().0 -= 1;
            let mut flaky = self.flaky.lock().unwrap();
            match (b.fail, flaky.get_mut(&step.to_string())) {
                (Some(_), Some(0)) | (None, _) => Ok(None),
                (Some(f), Some(n)) => {
                    *n -= 1;
                    Err(f())
                }
                (Some(f), None) => Err(f()),
            }
        }
        fn progress(&self) -> Arc<dyn Progress> {
            self.notes.clone()
        }
        fn driver_name(&self) -> String {
            "fake".into()
        }
        fn begin_run(&self) -> Result<Vec<StepRecord>> {
            let mut r = self.record.lock().unwrap();
            let before = if r.1 { Vec::new() } else { r.0.clone() };
            *r = (Vec::new(), false);
            Ok(before)
        }
        fn step_finished(&self, step: &Step) -> Result<()> {
            self.record.lock().unwrap().0.push(StepRecord { step: step.to_string(), finished_at: 0 });
            Ok(())
        }
        fn end_run(&self) -> Result<()> {
            self.record.lock().unwrap().1 = true;
            Ok(())
        }
    }

    fn step(node: &str) -> Step {
        Step::WaitEngine { node: node.into() }
    }

    fn planned(steps: Vec<(Step, Vec<usize>)>) -> Plan {
        Plan { steps: steps.into_iter().map(|(step, after)| PlannedStep { step, after }).collect(), blocked: vec![] }
    }

    /// Issue 10, item 2: a failed step stops what depends on it, and no new step starts, but the
    /// steps already running finish and are recorded; the first failure is what the run returns.
    #[tokio::test]
    async fn a_failed_step_stops_its_dependents_but_running_steps_finish_and_are_recorded() {
        let mut fake = Fake::default();
        fake.behaviour.insert(
            step("a").to_string(),
            Behaviour { ms: 20, fail: Some(|| Error::node("a", "wait for its engine", "boom")) },
        );
        fake.behaviour.insert(step("b").to_string(), Behaviour { ms: 200, fail: None });
        let fake = Arc::new(fake);
        // a and b at once; c after a; d after b.
        let p = planned(vec![(step("a"), vec![]), (step("b"), vec![]), (step("c"), vec![0]), (step("d"), vec![1])]);
        let err = execute(fake.clone(), &p).await.expect_err("a fails");
        assert!(err.to_string().contains("a: wait for its engine: boom"), "{err}");
        let started = fake.started.lock().unwrap().clone();
        assert!(!started.contains(&step("c").to_string()), "a dependent of the failed step ran: {started:?}");
        assert!(!started.contains(&step("d").to_string()), "a new step started after the failure: {started:?}");
        let record = fake.record.lock().unwrap().clone();
        let recorded: Vec<&str> = record.0.iter().map(|r| r.step.as_str()).collect();
        assert_eq!(recorded, [step("b").to_string()], "b was running when a failed: it finishes and is recorded");
        assert!(!record.1, "a failed run is not recorded as finished");
    }

    /// A step the swarm refused while it elected a leader is run again, and the run goes on;
    /// any other failure is the run's at once.
    #[tokio::test(start_paused = true)]
    async fn a_step_refused_during_an_election_is_run_again() {
        let mut fake = Fake::default();
        let electing = || {
            Error::node(
                "manager2",
                "set role, availability and labels",
                "rpc error: code = Unknown desc = raft: failed to process the request: node lost leader status",
            )
        };
        fake.behaviour.insert(step("a").to_string(), Behaviour { ms: 10, fail: Some(electing) });
        fake.flaky.lock().unwrap().insert(step("a").to_string(), 2);
        let fake = Arc::new(fake);
        let p = planned(vec![(step("a"), vec![]), (step("b"), vec![0])]);
        execute(fake.clone(), &p).await.expect("the election ends, and so does the run");
        let started = fake.started.lock().unwrap().clone();
        assert_eq!(started.iter().filter(|s| **s == step("a").to_string()).count(), 3, "{started:?}");
        assert!(started.contains(&step("b").to_string()), "{started:?}");
        let notes = fake.notes.0.lock().unwrap().clone();
        assert!(notes.iter().any(|n| n.contains("the swarm has no leader for the moment")), "{notes:?}");

        let mut fake = Fake::default();
        fake.behaviour.insert(
            step("a").to_string(),
            Behaviour { ms: 10, fail: Some(|| Error::node("a", "join the swarm as worker", "invalid join token")) },
        );
        fake.flaky.lock().unwrap().insert(step("a").to_string(), 2);
        let fake = Arc::new(fake);
        execute(fake.clone(), &planned(vec![(step("a"), vec![])])).await.expect_err("a plain failure fails");
        assert_eq!(fake.started.lock().unwrap().len(), 1, "a plain failure is not tried again");

        // An election that does not end: the step fails, with the swarm's words, after the bound.
        let mut fake = Fake::default();
        fake.behaviour.insert(step("a").to_string(), Behaviour { ms: 10, fail: Some(electing) });
        let fake = Arc::new(fake);
        let e = execute(fake.clone(), &planned(vec![(step("a"), vec![])])).await.expect_err("bounded");
        assert!(e.to_string().contains("node lost leader status"), "{e}");
    }

    /// Each step that runs says it started, then that it finished or failed (with its error,
    /// naming its node); one that never runs says nothing. Steps after one another report in
    /// that order.
    #[tokio::test]
    async fn progress_hears_each_step_start_then_finish_or_fail() {
        let mut fake = Fake::default();
        fake.behaviour.insert(
            step("b").to_string(),
            Behaviour { ms: 0, fail: Some(|| Error::op("wait for its engine", "refused")) },
        );
        let fake = Arc::new(fake);
        let p = planned(vec![(step("a"), vec![]), (step("b"), vec![0]), (step("c"), vec![1])]);
        execute(fake.clone(), &p).await.expect_err("b fails");
        let events = fake.notes.1.lock().unwrap().clone();
        let (a, b) = (step("a"), step("b"));
        assert_eq!(
            events,
            [
                format!("started {a}"),
                format!("finished {a}: -"),
                format!("started {b}"),
                format!("failed {b}: b: {b}: wait for its engine: refused"),
            ]
        );
    }

    /// Item 2: a step's error names its node, whatever error the step met.
    #[tokio::test]
    async fn a_steps_error_names_its_node() {
        let mut fake = Fake::default();
        fake.behaviour.insert(
            Step::StartNode { node: "worker2".into() }.to_string(),
            Behaviour { ms: 0, fail: Some(|| Error::unsupported("cannot start machine worker2")) },
        );
        fake.behaviour.insert(
            Step::LoadImage { node: "worker3".into(), image: "registry:2".into() }.to_string(),
            Behaviour { ms: 0, fail: Some(|| Error::op("export registry:2 from the local engine", "no space left")) },
        );
        let fake = Arc::new(fake);
        let e = execute(fake.clone(), &planned(vec![(Step::StartNode { node: "worker2".into() }, vec![])]))
            .await
            .unwrap_err();
        assert!(matches!(&e, Error::Node { node, .. } if node == "worker2"), "{e:?}");
        assert!(e.to_string().contains("driver fake cannot start machine worker2"), "{e}");
        let load = Step::LoadImage { node: "worker3".into(), image: "registry:2".into() };
        let e = execute(fake, &planned(vec![(load, vec![])])).await.unwrap_err();
        assert!(e.to_string().starts_with("worker3: ") && e.to_string().contains("no space left"), "{e}");
    }

    /// Issue 18, item 18: steps that wait for nothing run side by side, destroys as much as
    /// creates: all three are running at once at some point.
    #[tokio::test]
    async fn independent_destroys_run_side_by_side() {
        let destroy = |n: &str| Step::DestroyNode { node: n.into(), reason: "not in the topology".into() };
        let mut fake = Fake::default();
        for n in ["worker1", "worker2", "worker3"] {
            fake.behaviour.insert(destroy(n).to_string(), Behaviour { ms: 300, fail: None });
        }
        let fake = Arc::new(fake);
        let p = planned(vec![(destroy("worker1"), vec![]), (destroy("worker2"), vec![]), (destroy("worker3"), vec![])]);
        execute(fake.clone(), &p).await.expect("the destroys succeed");
        assert_eq!(fake.started.lock().unwrap().len(), 3);
        let most = fake.running.lock().unwrap().1;
        assert_eq!(most, 3, "at most {most} of the three independent destroys ran at once");
    }

    /// A runner over the planner's model of a cluster: each step changes the model as the
    /// real step changes the cluster, until the run is killed after `kill_after` steps.
    struct World {
        desired: crate::cluster::Desired,
        observed: Mutex<Observed>,
        kill_after: Option<usize>,
        fake: Fake,
    }

    #[async_trait::async_trait]
    impl StepRunner for World {
        async fn run_step(&self, step: &Step) -> Result<Option<String>> {
            let n = {
                let mut started = self.fake.started.lock().unwrap();
                started.push(step.to_string());
                started.len()
            };
            if self.kill_after.is_some_and(|k| n > k) {
                // The process is gone: nothing more happens and nothing more is recorded.
                std::future::pending::<()>().await;
            }
            apply(&self.desired, &mut self.observed.lock().unwrap(), step);
            Ok(None)
        }
        fn progress(&self) -> Arc<dyn Progress> {
            self.fake.notes.clone()
        }
        fn driver_name(&self) -> String {
            "fake".into()
        }
        fn begin_run(&self) -> Result<Vec<StepRecord>> {
            self.fake.begin_run()
        }
        fn step_finished(&self, step: &Step) -> Result<()> {
            self.fake.step_finished(step)
        }
        fn end_run(&self) -> Result<()> {
            self.fake.end_run()
        }
    }

    /// Item 2: an `up` killed half-way, then run again, redoes nothing the first did, says it
    /// is resuming (from the record of the first), and converges.
    #[tokio::test]
    async fn a_resumed_run_redoes_nothing_the_interrupted_run_did() {
        for kill_after in 1..12 {
            let d = desired(1, 2, ModeRequest::Auto);
            let world = Arc::new(World {
                desired: d.clone(),
                observed: Mutex::new(Observed::default()),
                kill_after: Some(kill_after),
                fake: Fake::default(),
            });
            let first = plan(&d, &world.observed.lock().unwrap().clone());
            // Killed: the run never returns; stop waiting for it.
            let _ = tokio::time::timeout(Duration::from_millis(300), execute(world.clone(), &first)).await;
            let done_first: Vec<String> = world.fake.record.lock().unwrap().0.iter().map(|r| r.step.clone()).collect();
            assert!(!done_first.is_empty() && done_first.len() <= kill_after, "{done_first:?}");
            // The next `up`: a new process, the same cluster and the same record.
            let again = Arc::new(World {
                desired: d.clone(),
                observed: Mutex::new(world.observed.lock().unwrap().clone()),
                kill_after: None,
                fake: Fake { record: Mutex::new(world.fake.record.lock().unwrap().clone()), ..Fake::default() },
            });
            let second = plan(&d, &again.observed.lock().unwrap().clone());
            for s in &second.steps {
                assert!(
                    !done_first.contains(&s.step.to_string()),
                    "{} is done again after a kill at {kill_after}",
                    s.step
                );
            }
            execute(again.clone(), &second).await.unwrap();
            let notes = again.fake.notes.0.lock().unwrap().clone();
            assert!(
                notes.iter().any(|n| n.contains(&match done_first.len() {
                    1 => "interrupted run had finished 1 step;".to_string(),
                    n => format!("interrupted run had finished {n} steps;"),
                })),
                "{notes:?}"
            );
            assert!(again.fake.record.lock().unwrap().1, "the resumed run is recorded as finished");
            assert!(
                plan(&d, &again.observed.lock().unwrap().clone()).is_empty(),
                "not converged after a kill at {kill_after}"
            );
        }
    }
}
