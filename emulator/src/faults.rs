//! Fault injection: which fault (if any) hits a given request.
//!
//! Two sources, scripted first: `fail_next` queues exact faults per operation, and a
//! [`FaultPlan`] fires at a rate. The plan's decision for the n-th request of an operation is a
//! pure function of (seed, operation, n), so a run is reproducible even when requests to
//! different operations interleave differently from run to run.

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::router::Op;

/// A kind of fault. Unless the name says otherwise, the fault fires before the request is
/// handled, so a mutating request it hits changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// 400 ThrottlingException (the SDK's throttling class).
    Throttle,
    /// 500 ServiceUnavailableException, Glacier's documented server error.
    InternalError,
    /// 503 ServiceUnavailable (a load-balancer-style refusal; retried by status).
    ServiceUnavailable,
    /// 408 RequestTimeoutException (transient by error code).
    RequestTimeout,
    /// 503 InsufficientCapacityException: no Expedited capacity (meant for InitiateJob).
    InsufficientCapacity,
    /// 400 PolicyEnforcedException: a permanent refusal by the vault's retrieval policy.
    PolicyEnforced,
    /// 400 InvalidParameterValueException: a permanent refusal of the request as sent.
    InvalidParameter,
    /// A bare 404 Not Found with an HTML body and no error code, as an endpoint (a proxy, a
    /// partial emulator) that does not implement the operation answers.
    NoSuchOperation,
    /// Read the request, stall for the emulator's stall time, then close without a response.
    Timeout,
    /// Read the request, then reset the connection (RST) without a response.
    Reset,
    /// Handle the request (state DOES change), then reset without a response: a reply lost in
    /// the network after the service committed.
    ResetAfterCommit,
    /// Handle the request (state DOES change), stall, then close without a response.
    TimeoutAfterCommit,
    /// GetJobOutput only: send the headers and half the body, then reset.
    ResetMidBody,
    /// GetJobOutput only: flip one byte of the body; the headers still claim the right hash.
    CorruptOutput,
    /// GetJobOutput only: send fewer body bytes than Content-Length, then close cleanly.
    TruncateOutput,
}

impl FaultKind {
    /// Faults that act on the body of a GetJobOutput response.
    pub fn is_output_fault(self) -> bool {
        matches!(
            self,
            FaultKind::ResetMidBody | FaultKind::CorruptOutput | FaultKind::TruncateOutput
        )
    }

    /// Whether this kind can hit `op`: output faults only make sense on GetJobOutput.
    pub fn applies_to(self, op: Op) -> bool {
        !self.is_output_fault() || op == Op::GetJobOutput
    }
}

/// A probabilistic fault plan: each request to an operation in `ops` (all when `None`) is hit
/// with probability `rate` by one of `kinds` chosen uniformly among those that apply to it.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub rate: f64,
    pub kinds: Vec<FaultKind>,
    pub seed: u64,
    pub ops: Option<Vec<Op>>,
}

#[derive(Default)]
pub(crate) struct Faults {
    plan: Option<FaultPlan>,
    /// Requests seen per operation since the plan was set: the `n` of the decision.
    counters: HashMap<Op, u64>,
    /// Per operation, runs of requests in order: `(None, n)` lets n pass, `(Some(k), n)` hits
    /// n with k.
    scripted: HashMap<Op, VecDeque<(Option<FaultKind>, usize)>>,
    /// Job id → persistent? for `corrupt_job_output`.
    corrupt_jobs: HashMap<String, bool>,
    /// Job id → the output offset from which its downloads stall, for `stall_job_output`.
    stall_jobs: HashMap<String, u64>,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Faults {
    pub fn set_plan(&mut self, plan: FaultPlan) {
        assert!(
            (0.0..=1.0).contains(&plan.rate),
            "fault rate must be within 0..=1"
        );
        self.plan = Some(plan);
        self.counters.clear();
    }

    /// Drops the plan, the scripted queue and pending output corruptions.
    pub fn clear(&mut self) {
        *self = Faults::default();
    }

    pub fn fail_next(&mut self, op: Op, kind: FaultKind, count: usize) {
        assert!(
            kind.applies_to(op),
            "{kind:?} only applies to GetJobOutput, not {op:?}"
        );
        self.script(op, Some(kind), count);
    }

    /// Lets `skip` more requests to `op` pass, then hits the next one with `kind`.
    pub fn fail_after(&mut self, op: Op, skip: usize, kind: FaultKind) {
        assert!(kind.applies_to(op), "{kind:?} does not apply to {op:?}");
        self.script(op, None, skip);
        self.script(op, Some(kind), 1);
    }

    fn script(&mut self, op: Op, kind: Option<FaultKind>, count: usize) {
        if count > 0 {
            self.scripted
                .entry(op)
                .or_default()
                .push_back((kind, count));
        }
    }

    pub fn corrupt_job(&mut self, job_id: &str, persistent: bool) {
        self.corrupt_jobs.insert(job_id.to_string(), persistent);
    }

    pub fn stall_job(&mut self, job_id: &str, from: u64) {
        self.stall_jobs.insert(job_id.to_string(), from);
    }

    /// Whether a download of `job_id` starting at output offset `start` is to stall.
    pub fn stalls_job(&self, job_id: &str, start: u64) -> bool {
        self.stall_jobs
            .get(job_id)
            .is_some_and(|from| start >= *from)
    }

    /// Whether this download of `job_id` is to be corrupted; a one-shot mark is used up.
    pub fn take_job_corruption(&mut self, job_id: &str) -> bool {
        match self.corrupt_jobs.get(job_id) {
            Some(true) => true,
            Some(false) => {
                self.corrupt_jobs.remove(job_id);
                true
            }
            None => false,
        }
    }

    /// The fault for the next request to `op`, if any.
    pub fn pick(&mut self, op: Op) -> Option<FaultKind> {
        if let Some(queue) = self.scripted.get_mut(&op) {
            if let Some(front) = queue.front_mut() {
                let kind = front.0;
                front.1 -= 1;
                if front.1 == 0 {
                    queue.pop_front();
                }
                return kind;
            }
        }
        let plan = self.plan.as_ref()?;
        if plan.ops.as_ref().is_some_and(|ops| !ops.contains(&op)) {
            return None;
        }
        let n = self.counters.entry(op).or_insert(0);
        *n += 1;
        let applicable: Vec<FaultKind> = plan
            .kinds
            .iter()
            .copied()
            .filter(|k| k.applies_to(op))
            .collect();
        if applicable.is_empty() {
            return None;
        }
        let mix = splitmix64(plan.seed ^ splitmix64((op as u64) << 32 ^ *n));
        let mut rng = StdRng::seed_from_u64(mix);
        if rng.random::<f64>() < plan.rate {
            Some(applicable[rng.random_range(0..applicable.len())])
        } else {
            None
        }
    }
}
