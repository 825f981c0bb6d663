//! The Test of an authorization-code profile (`POST /admin/profiles/{name}/test`): the operator
//! signs in through a login link like an end user's, and the callback, seeing that the link was
//! made for a test, exchanges the code, writes the report (the same [`TestReport`] as a machine
//! grant's, every token masked) into the test's record and keeps no grant.
//!
//! A test is one record in the store (`test:{id}`, see `store::names`) that expires with its login
//! link (`auth.ticket_ttl` after the start), so the replica that serves the callback and the one the
//! admin API is polled on need not be the same. Its state goes `waiting` → `succeeded` | `failed`
//! once; a finished test is never written again. Calls block: use `spawn_blocking`.

use serde::{Deserialize, Serialize};

use super::grants::{self, now_unix, random_id, Ticket};
use super::test_auth::TestReport;
use crate::store::{Name, Store};
use crate::token::{TokenError, TokenErrorKind};

/// Where a test stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestState {
    /// Waiting for the operator's sign-in.
    Waiting,
    /// A token was obtained (and dropped).
    Succeeded,
    /// The sign-in or the code exchange failed; the report says why.
    Failed,
}

impl TestState {
    pub fn as_str(self) -> &'static str {
        match self {
            TestState::Waiting => "waiting",
            TestState::Succeeded => "succeeded",
            TestState::Failed => "failed",
        }
    }
}

/// A test's record.
#[derive(Debug, Serialize, Deserialize)]
pub struct TestRun {
    pub profile: String,
    pub state: TestState,
    /// When the test (and its login link) expires, Unix seconds.
    pub expires_at: u64,
    /// Set once the test finished.
    pub report: Option<TestReport>,
}

impl TestRun {
    /// Seconds until the test expires.
    pub fn expires_in(&self) -> u64 {
        self.expires_at.saturating_sub(now_unix())
    }
}

fn store_error(e: impl std::fmt::Display) -> TokenError {
    TokenError::new(
        TokenErrorKind::StoreUnavailable,
        format!("the token store is unavailable: {e}"),
    )
}

/// Starts a test of `ticket.profile`: writes its record (waiting) and its login ticket, both
/// expiring after `ttl`. Returns the test id and the ticket id.
pub fn start(
    store: &Store,
    ttl: std::time::Duration,
    mut ticket: Ticket,
) -> Result<(String, String), TokenError> {
    let id = random_id();
    let expires_at = now_unix() + ttl.as_secs();
    let run = TestRun {
        profile: ticket.profile.clone(),
        state: TestState::Waiting,
        expires_at,
        report: None,
    };
    write(store, &id, &run)?;
    ticket.test = Some(id.clone());
    let ticket_id = grants::new_ticket(store, ttl, &ticket)?;
    Ok((id, ticket_id))
}

fn write(store: &Store, id: &str, run: &TestRun) -> Result<(), TokenError> {
    let bytes = serde_json::to_vec(run).map_err(store_error)?;
    store
        .put(&Name::auth_test(id), &bytes, Some(run.expires_at))
        .map_err(store_error)
}

/// A test's record; `None` when unknown or expired.
pub fn read(store: &Store, id: &str) -> Result<Option<TestRun>, TokenError> {
    let bytes = store.get(&Name::auth_test(id)).map_err(store_error)?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Writes a waiting test's result (succeeded when the report is `ok`). Returns false when the test
/// is unknown, expired or already finished (nothing is written then).
pub fn finish(store: &Store, id: &str, report: TestReport) -> Result<bool, TokenError> {
    let Some(mut run) = read(store, id)? else {
        return Ok(false);
    };
    if run.state != TestState::Waiting || run.profile != report.profile {
        return Ok(false);
    }
    run.state = if report.ok {
        TestState::Succeeded
    } else {
        TestState::Failed
    };
    run.report = Some(report);
    write(store, id, &run)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ticket(profile: &str) -> Ticket {
        Ticket {
            profile: profile.into(),
            user: String::new(),
            tenant: None,
            context: Vec::new(),
            test: None,
        }
    }

    fn report(profile: &str, ok: bool) -> TestReport {
        let mut r = TestReport::refused(
            profile,
            None,
            None,
            crate::error::ErrorCode::AuthorizationDenied,
            "access_denied",
        );
        r.ok = ok;
        r
    }

    #[test]
    fn a_test_waits_then_finishes_once_and_its_ticket_names_it() {
        let store = Store::memory();
        let (id, ticket_id) = start(&store, Duration::from_secs(600), ticket("p")).unwrap();
        let t = grants::read_ticket(&store, &ticket_id).unwrap().unwrap();
        assert_eq!(t.test.as_deref(), Some(id.as_str()));
        let run = read(&store, &id).unwrap().unwrap();
        assert_eq!((run.state, run.profile.as_str()), (TestState::Waiting, "p"));
        assert!(run.report.is_none() && run.expires_in() > 590);
        // Another profile's report is not written into it.
        assert!(!finish(&store, &id, report("q", true)).unwrap());
        assert!(finish(&store, &id, report("p", false)).unwrap());
        let run = read(&store, &id).unwrap().unwrap();
        assert_eq!(run.state, TestState::Failed);
        assert_eq!(
            run.report.unwrap().error.unwrap().code,
            "authorization_denied"
        );
        // Finished: a second result is not written.
        assert!(!finish(&store, &id, report("p", true)).unwrap());
        assert_eq!(read(&store, &id).unwrap().unwrap().state, TestState::Failed);
        assert!(read(&store, "unknown").unwrap().is_none());
        assert!(!finish(&store, "unknown", report("p", true)).unwrap());
    }

    #[test]
    fn an_expired_test_reads_as_unknown() {
        let store = Store::memory();
        let (id, ticket_id) = start(&store, Duration::ZERO, ticket("p")).unwrap();
        assert!(read(&store, &id).unwrap().is_none());
        assert!(grants::read_ticket(&store, &ticket_id).unwrap().is_none());
        assert!(!finish(&store, &id, report("p", true)).unwrap());
    }
}
