//! [`Emulator`]: the cheap-clone handle shared by the HTTP server and by tests in-process.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::AuthSettings;
use crate::faults::{FaultRule, FaultSet, FaultStatus};
use crate::log::{RequestLog, RequestRecord};
use crate::render;
use crate::scenario::{NodeState, Scenario, ScenarioError};
use crate::state::{AgentLogUpload, NodeAction, State, key};

/// How long after `uploadbatchservicelogs` answers its files arrive, unless the scenario says.
const DEFAULT_AGENT_LOG_DELAY: Duration = Duration::from_millis(200);

/// Base URL used for `url` fields before any request has told us our own address.
const FALLBACK_BASE: &str = "http://127.0.0.1";

/// A running emulated Batch account. Cloning is cheap (an `Arc`); all clones share one state,
/// so a test can hold one clone while the server serves another.
#[derive(Clone, Debug)]
pub struct Emulator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Jobs, tasks, nodes and files.
    state: Mutex<State>,
    /// Active fault rules.
    faults: Mutex<FaultSet>,
    /// Requests seen.
    log: Mutex<RequestLog>,
    /// Credentials accepted.
    auth: AuthSettings,
    /// Fixed base URL from the scenario, if any.
    base_url: Option<String>,
    /// Base URL of the latest request, for in-process reads.
    last_base: Mutex<String>,
    /// How long after `uploadbatchservicelogs` answers the files arrive.
    agent_log_delay: Mutex<Duration>,
}

/// Locks a mutex, recovering the data if another thread panicked while holding it: the
/// emulator's state stays usable and no request handler can be made to panic by a poisoned lock.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Emulator {
    /// Builds an emulator from a scenario (checked again here, since scenarios can be built in
    /// code). Relative times (`now-5m`) are resolved against the current clock.
    pub fn new(scenario: Scenario) -> Result<Self, ScenarioError> {
        scenario.validate()?;
        let now = OffsetDateTime::now_utc();
        let state = State::build(&scenario, now)?;
        let key = if scenario.auth.shared_key {
            Some(
                base64::engine::general_purpose::STANDARD
                    .decode(&scenario.account.key)
                    .map_err(|_| {
                        ScenarioError::Invalid("account.key is not valid base64".to_owned())
                    })?,
            )
        } else {
            None
        };
        let mut faults = FaultSet::default();
        faults.replace(scenario.faults.clone());
        let base_url = scenario
            .base_url
            .as_ref()
            .map(|url| url.trim_end_matches('/').to_owned());
        Ok(Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                faults: Mutex::new(faults),
                log: Mutex::new(RequestLog::default()),
                auth: AuthSettings {
                    required: scenario.auth.required,
                    account: scenario.account.name.clone(),
                    key,
                    tokens: scenario.auth.bearer_tokens.clone(),
                },
                last_base: Mutex::new(base_url.clone().unwrap_or_else(|| FALLBACK_BASE.to_owned())),
                agent_log_delay: Mutex::new(
                    scenario
                        .agent_logs
                        .delay_millis
                        .map_or(DEFAULT_AGENT_LOG_DELAY, Duration::from_millis),
                ),
                base_url,
            }),
        })
    }

    /// An emulator over [`Scenario::builtin`].
    pub fn builtin() -> Self {
        // The built-in scenario is covered by tests, so building it cannot fail in practice;
        // an empty account is the harmless fallback.
        Self::new(Scenario::builtin())
            .or_else(|_| Self::new(Scenario::default()))
            .unwrap_or_else(|_| unreachable!("the empty scenario is always valid"))
    }

    /// The account name clients must sign with.
    pub fn account_name(&self) -> &str {
        &self.inner.auth.account
    }

    /// Every Batch API request so far, oldest first (admin routes are not logged).
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.inner.log).snapshot()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.inner.log).clear();
    }

    /// Replaces all fault rules (counters restart).
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        lock(&self.inner.faults).replace(rules);
    }

    /// Adds one fault rule after the existing ones.
    pub fn add_fault(&self, rule: FaultRule) {
        lock(&self.inner.faults).extend(vec![rule]);
    }

    /// Removes all fault rules.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).replace(Vec::new());
    }

    /// The fault rules with how often each matched and fired.
    pub fn faults(&self) -> Vec<FaultStatus> {
        lock(&self.inner.faults).statuses()
    }

    /// The job as `GET /jobs/{id}` would return it now, without counting as a read (so it
    /// does not advance `afterReads` transitions; time-based ones that are due do complete).
    pub fn job(&self, job_id: &str) -> Option<Value> {
        let base = self.last_base();
        let mut state = lock(&self.inner.state);
        let now = OffsetDateTime::now_utc();
        let job = state.job_mut(job_id, now, false).ok()?;
        Some(Value::Object(render::job(&base, job)))
    }

    /// The task as `GET /jobs/{job}/tasks/{id}` would return it now.
    pub fn task(&self, job_id: &str, task_id: &str) -> Option<Value> {
        let base = self.last_base();
        let mut state = lock(&self.inner.state);
        let now = OffsetDateTime::now_utc();
        let job = state.job_mut(job_id, now, false).ok()?;
        let task = job.tasks.get(&key(task_id))?;
        Some(Value::Object(render::task(&base, job_id, task)))
    }

    /// Removes a node from its pool: its files (and those of tasks that ran on it) answer
    /// 404 `NodeNotFound` from now on. Returns false when the node is unknown.
    pub fn remove_node(&self, pool_id: &str, node_id: &str) -> bool {
        self.set_node_state(pool_id, node_id, NodeState::Removed)
    }

    /// Sets a node's state (`notReady` gives 409 `NodeNotReady`). False when the node is unknown.
    pub fn set_node_state(&self, pool_id: &str, node_id: &str, node_state: NodeState) -> bool {
        lock(&self.inner.state).set_node_state(pool_id, node_id, node_state)
    }

    /// The pool's resize completes: idle nodes are added up to its target, its `resizeErrors`
    /// are cleared and it is `steady`, as when quota or capacity became available. False when
    /// the pool is unknown.
    pub fn finish_pool_resize(&self, pool_id: &str) -> bool {
        lock(&self.inner.state).finish_pool_resize(pool_id, OffsetDateTime::now_utc())
    }

    /// The pool's autoscale formula evaluates without error from now on. False when the pool
    /// is unknown.
    pub fn succeed_autoscale(&self, pool_id: &str) -> bool {
        lock(&self.inner.state).succeed_autoscale(pool_id, OffsetDateTime::now_utc())
    }

    /// The node recovers: `idle`, no errors, its start task succeeded. False when the node is
    /// unknown or removed.
    pub fn recover_node(&self, pool_id: &str, node_id: &str) -> bool {
        lock(&self.inner.state).recover_node(pool_id, node_id, OffsetDateTime::now_utc())
    }

    /// The node breaks (again): `unusable` from now, with one error `code` (`DiskFull`, say).
    /// False when the node is unknown or removed.
    pub fn make_node_unusable(&self, pool_id: &str, node_id: &str, code: &str) -> bool {
        lock(&self.inner.state).make_node_unusable(
            pool_id,
            node_id,
            code,
            OffsetDateTime::now_utc(),
        )
    }

    /// The pool's deletion completes: the pool and its nodes answer 404 from now on. False when
    /// the pool is unknown.
    pub fn delete_pool(&self, pool_id: &str) -> bool {
        lock(&self.inner.state).delete_pool(pool_id)
    }

    /// The pool as `GET /pools/{id}` would return it now (not counted as a read).
    pub fn pool(&self, pool_id: &str) -> Option<Value> {
        let base = self.last_base();
        let mut state = lock(&self.inner.state);
        state.tick_pools(OffsetDateTime::now_utc(), None);
        let pool = state.pools.get(&key(pool_id))?;
        Some(Value::Object(render::pool(&base, pool)))
    }

    /// The node as `GET /pools/{pool}/nodes/{id}` would return it now (not counted as a
    /// read); `None` once it left the pool.
    pub fn node(&self, pool_id: &str, node_id: &str) -> Option<Value> {
        let base = self.last_base();
        let mut state = lock(&self.inner.state);
        state.tick_pools(OffsetDateTime::now_utc(), None);
        let pool_key = key(pool_id);
        let node = state
            .pool_nodes(&pool_key)
            .find(|(node_key, _)| *node_key == key(node_id))?
            .1;
        Some(Value::Object(render::node(&base, pool_id, node)))
    }

    /// The node actions (remove, reimage) carried out so far, oldest first.
    pub fn node_actions(&self) -> Vec<NodeAction> {
        lock(&self.inner.state).node_actions.clone()
    }

    /// The `uploadbatchservicelogs` requests answered so far, oldest first (destinations
    /// without their SAS query).
    pub fn agent_log_uploads(&self) -> Vec<AgentLogUpload> {
        lock(&self.inner.state).agent_log_uploads.clone()
    }

    /// Sets how long after `uploadbatchservicelogs` answers its files arrive.
    pub fn set_agent_log_delay(&self, delay: Duration) {
        *lock(&self.inner.agent_log_delay) = delay;
    }

    pub(crate) fn agent_log_delay(&self) -> Duration {
        *lock(&self.inner.agent_log_delay)
    }

    /// Completes every pending job transition now (terminating → completed, …).
    pub fn settle(&self) {
        lock(&self.inner.state).settle(OffsetDateTime::now_utc());
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    pub(crate) fn auth(&self) -> &AuthSettings {
        &self.inner.auth
    }

    pub(crate) fn check_faults(
        &self,
        method: &str,
        raw_path: &str,
        decoded_path: &str,
    ) -> Option<crate::faults::Fault> {
        lock(&self.inner.faults).check(method, raw_path, decoded_path)
    }

    pub(crate) fn extend_faults(&self, rules: Vec<FaultRule>) {
        lock(&self.inner.faults).extend(rules);
    }

    pub(crate) fn record(&self, record: RequestRecord) {
        lock(&self.inner.log).push(record);
    }

    /// The base URL for a request: the scenario's, else `http://{Host}` when the Host header is
    /// a plausible host[:port], else the fallback.
    pub(crate) fn base_url_for(&self, host: Option<&str>) -> String {
        if let Some(base) = &self.inner.base_url {
            return base.clone();
        }
        let base = host
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    })
            })
            .map_or_else(|| FALLBACK_BASE.to_owned(), |h| format!("http://{h}"));
        *lock(&self.inner.last_base) = base.clone();
        base
    }

    fn last_base(&self) -> String {
        lock(&self.inner.last_base).clone()
    }
}
