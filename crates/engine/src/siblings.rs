//! `n > 1`: the siblings of a request share its prompt's KV blocks. Only the leader
//! (completion 0) enters the scheduler at first; the others are held back until the
//! leader's prompt is cached (or the leader ended), then scheduled, so they hit the prefix
//! cache instead of computing the same prompt `n` times.

use crate::core::EngineCore;
use crate::error::EngineError;
use crate::params::RequestId;

impl EngineCore {
    /// Releases deferred siblings once their leader's prompt is in the cache (or it ended).
    pub(crate) fn release_deferred(&mut self) {
        let ready: Vec<RequestId> = self
            .reqs
            .deferred()
            .filter(|(g, d)| {
                if self.reqs.is_pending(*g) {
                    return false; // the leader waits for its adapter
                }
                let prompt_len = self.reqs.get(d.leader).map(|s| s.prompt.len()).unwrap_or(0);
                match self.sched.num_computed_tokens(d.leader) {
                    Some(c) => c + 1 >= prompt_len,
                    None => true,
                }
            })
            .map(|(g, _)| g)
            .collect();
        for g in ready {
            let Some(d) = self.reqs.drop_deferred(g) else {
                continue;
            };
            for id in d.children {
                if !self.reqs.contains(id) {
                    continue;
                }
                if let Err(e) = self.schedule_seq(id) {
                    // Admission reserved room for every sibling, so this is a bug; it is
                    // still not the model's fault.
                    tracing::error!(error = %e, "cannot schedule an n>1 sibling");
                    self.fail_seq(id, EngineError::Capacity);
                }
            }
        }
    }
}
