//! What intake remembers about recent jobs: last status (for `job.status_changed`'s
//! `old_status`), and type and priority from the submission (so `job_types` and `job_priorities`
//! filters also judge later events of the job, which do not carry those fields).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

/// Most jobs remembered; the oldest are forgotten first.
const MAX_JOBS: usize = 100_000;

#[derive(Debug, Default, Clone)]
struct Job {
    status: Option<&'static str>,
    job_type: Option<String>,
    priority: Option<Value>,
}

/// Recent jobs, bounded.
#[derive(Debug, Default)]
pub(crate) struct JobTracker {
    /// Keyed by job id; the same id is shared with `order` (one allocation per job).
    jobs: HashMap<Arc<str>, Job>,
    order: VecDeque<Arc<str>>,
}

impl JobTracker {
    /// Records a lifecycle step; returns the previous status if it differs from `new_status`
    /// (`Some(None)`: changed, previous unknown), or `None` if the status did not change.
    pub(crate) fn transition(
        &mut self,
        job_id: &str,
        new_status: &'static str,
        job_type: Option<String>,
        priority: Option<Value>,
    ) -> Option<Option<&'static str>> {
        self.remember(job_id);
        // Just remembered: always there (were it not, "no change" would be the safe answer).
        let job = self.jobs.get_mut(job_id)?;
        if job_type.is_some() {
            job.job_type = job_type;
        }
        if priority.is_some() {
            job.priority = priority;
        }
        let old = job.status.replace(new_status);
        (old != Some(new_status)).then_some(old)
    }

    /// Whether the job's last known status is terminal (completed, failed or cancelled).
    pub(crate) fn finished(&self, job_id: &str) -> bool {
        self.jobs
            .get(job_id)
            .and_then(|j| j.status)
            .is_some_and(|s| matches!(s, "completed" | "failed" | "cancelled"))
    }

    /// The type and priority a submission gave this job.
    pub(crate) fn known(&self, job_id: &str) -> (Option<String>, Option<Value>) {
        self.jobs
            .get(job_id)
            .map(|j| (j.job_type.clone(), j.priority.clone()))
            .unwrap_or_default()
    }

    /// Adds `job_id` if it is new, forgetting the oldest jobs beyond the bound.
    fn remember(&mut self, job_id: &str) {
        if !self.jobs.contains_key(job_id) {
            while self.order.len() >= MAX_JOBS {
                if let Some(oldest) = self.order.pop_front() {
                    self.jobs.remove(&oldest);
                }
            }
            let id: Arc<str> = Arc::from(job_id);
            self.order.push_back(id.clone());
            self.jobs.insert(id, Job::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_report_the_previous_status() {
        let mut t = JobTracker::default();
        assert_eq!(
            t.transition("j", "pending", Some("comfyui".into()), None),
            Some(None)
        );
        assert_eq!(
            t.transition("j", "in_progress", None, None),
            Some(Some("pending"))
        );
        assert_eq!(t.transition("j", "in_progress", None, None), None);
        assert_eq!(t.known("j").0.as_deref(), Some("comfyui"));
        assert!(!t.finished("j"));
        t.transition("j", "completed", None, None);
        assert!(t.finished("j"));
        // Resubmitted (a retry of the job): live again.
        t.transition("j", "pending", None, None);
        assert!(!t.finished("j"));
        assert!(!t.finished("unknown"));
    }

    #[test]
    fn the_oldest_jobs_are_forgotten_beyond_the_bound() {
        let mut t = JobTracker::default();
        t.transition("first", "pending", Some("a".into()), None);
        for i in 0..MAX_JOBS {
            t.transition(&format!("j{i}"), "pending", None, None);
        }
        assert_eq!(t.jobs.len(), MAX_JOBS);
        assert_eq!(t.order.len(), MAX_JOBS);
        assert_eq!(t.known("first").0, None);
        assert_eq!(t.transition("first", "in_progress", None, None), Some(None));
        assert_eq!(
            t.transition(&format!("j{}", MAX_JOBS - 1), "in_progress", None, None),
            Some(Some("pending"))
        );
    }
}
