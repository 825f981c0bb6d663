//! Record names: every record the store keeps is named here, and only here.
//!
//! | record | name | written by |
//! | --- | --- | --- |
//! | an end user's grant | `grant:{profile}:{tenant or -}:{user}` | the callback, the start page, refreshes |
//! | a saved token | `token:{profile}:{fingerprint, 16 hex digits}:{tenant or -}:{user or -}` | the token cache |
//! | a login ticket | `ticket:{id}` | an `authorization_required` answer |
//! | a ticket's live `state` | `ticket:{id}:state` | the start page |
//! | a ticket's credential checks | `ticket:{id}:attempts` | the start page (password grant) |
//! | an authorization in progress | `state:{state}`, or `state:oauth1:{SHA-256 of the request token, hex}` (three-legged OAuth 1.0a) | the start page |
//! | a user's credential checks in a window | `attempts:{profile}:{window start}:{user}` | the start page |
//! | the fleet-wide refresh lock of a record | `lock:{record name}` | refreshes (Redis) |
//! | a Test of an authorization-code profile and its report | `test:{id}` | `POST /admin/profiles/{name}/test`, the callback |
//! | a webhook delivery (pending, or failed and kept for a while) | `hook:{id}` | grant events (`crate::webhooks`) |
//! | a replica's lease on one webhook delivery | `lock:hook:{id}` | the webhook sender (Redis) |
//! | a secret the config refers to as `${store:NAME}` | `secret:{NAME}` | the profile form (`PUT /admin/profile-form/{name}`) |
//!
//! Profile names hold no `:` (checked at load) and tenants are DNS labels, so a grant's name splits
//! back into its parts even when the user id holds a `:`. Names are not secret: the records are
//! sealed with their name as associated data; ticket ids and states are random and single-use.

use std::fmt;
use std::ops::Deref;

/// The kinds of records, by the prefix of their names (for listing and sweeping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Grant,
    Token,
    /// Tickets and the records beside them (their live state, their attempt counts).
    Ticket,
    State,
    Attempts,
    Lock,
    /// Tests of authorization-code profiles (`POST /admin/profiles/{name}/test`).
    Test,
    /// Webhook deliveries.
    Webhook,
    /// Secrets the config refers to as `${store:NAME}`.
    Secret,
}

impl Kind {
    /// What every name of this kind starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Grant => "grant:",
            Kind::Token => "token:",
            Kind::Ticket => "ticket:",
            Kind::State => "state:",
            Kind::Attempts => "attempts:",
            Kind::Lock => "lock:",
            Kind::Test => "test:",
            Kind::Webhook => "hook:",
            Kind::Secret => "secret:",
        }
    }
}

/// The name of one record. Derefs to `str`, which is what the store's calls take.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    /// An end user's grant.
    pub fn grant(profile: &str, tenant: Option<&str>, user: &str) -> Name {
        Name(format!(
            "{}{profile}:{}:{user}",
            Kind::Grant.prefix(),
            tenant.unwrap_or("-")
        ))
    }

    /// A token the cache saved (machine tokens).
    pub fn token(
        profile: &str,
        fingerprint: u64,
        tenant: Option<&str>,
        user: Option<&str>,
    ) -> Name {
        Name(format!(
            "{}{profile}:{fingerprint:016x}:{}:{}",
            Kind::Token.prefix(),
            tenant.unwrap_or("-"),
            user.unwrap_or("-")
        ))
    }

    /// A login ticket.
    pub fn ticket(id: &str) -> Name {
        Name(format!("{}{id}", Kind::Ticket.prefix()))
    }

    /// The pointer to a ticket's live `state` (one per ticket).
    pub fn ticket_state(ticket: &str) -> Name {
        Name(format!("{}{ticket}:state", Kind::Ticket.prefix()))
    }

    /// A ticket's count of credential checks at the IdP (next to the ticket, so replicas sharing
    /// the store count together).
    pub fn ticket_attempts(ticket: &str) -> Name {
        Name(format!("{}{ticket}:attempts", Kind::Ticket.prefix()))
    }

    /// An authorization in progress, under its `state`.
    pub fn state(state: &str) -> Name {
        Name(format!("{}{state}", Kind::State.prefix()))
    }

    /// A user's credential checks for a profile in the fixed window starting at `window_start`
    /// (Unix seconds).
    pub fn user_attempts(profile: &str, user: &str, window_start: u64) -> Name {
        Name(format!(
            "{}{profile}:{window_start}:{user}",
            Kind::Attempts.prefix()
        ))
    }

    /// A Test of an authorization-code profile: its state and, once the operator signed in, its
    /// report.
    pub fn auth_test(id: &str) -> Name {
        Name(format!("{}{id}", Kind::Test.prefix()))
    }

    /// A webhook delivery, under its `webhook-id`.
    pub fn webhook(id: &str) -> Name {
        Name(format!("{}{id}", Kind::Webhook.prefix()))
    }

    /// A secret the config refers to as `${store:NAME}`.
    pub fn secret(name: &str) -> Name {
        Name(format!("{}{name}", Kind::Secret.prefix()))
    }

    /// The fleet-wide refresh lock of this record.
    pub fn lock(&self) -> Name {
        Name(format!("{}{}", Kind::Lock.prefix(), self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The record a lock name locks (`None`: not a lock's name).
pub fn locked(name: &str) -> Option<&str> {
    name.strip_prefix(Kind::Lock.prefix())
}

/// A grant's name split into profile, tenant (`None` for `-`) and user.
pub fn parse_grant(name: &str) -> Option<(&str, Option<&str>, &str)> {
    let mut parts = name.strip_prefix(Kind::Grant.prefix())?.splitn(3, ':');
    let (profile, tenant, user) = (parts.next()?, parts.next()?, parts.next()?);
    Some((profile, (tenant != "-").then_some(tenant), user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_formats() {
        assert_eq!(&*Name::grant("p", None, "alice"), "grant:p:-:alice");
        assert_eq!(&*Name::grant("p", Some("acme"), "a:b"), "grant:p:acme:a:b");
        assert_eq!(
            &*Name::token("p", 0xab, None, Some("u")),
            "token:p:00000000000000ab:-:u"
        );
        assert_eq!(&*Name::ticket("T"), "ticket:T");
        assert_eq!(&*Name::ticket_state("T"), "ticket:T:state");
        assert_eq!(&*Name::ticket_attempts("T"), "ticket:T:attempts");
        assert_eq!(&*Name::state("S"), "state:S");
        assert_eq!(&*Name::auth_test("X"), "test:X");
        assert_eq!(&*Name::webhook("msg_1"), "hook:msg_1");
        assert_eq!(
            &*Name::secret("okta.client_secret"),
            "secret:okta.client_secret"
        );
        assert_eq!(&*Name::user_attempts("p", "u", 3600), "attempts:p:3600:u");
        let lock = Name::grant("p", None, "u").lock();
        assert_eq!(&*lock, "lock:grant:p:-:u");
        assert_eq!(locked(&lock), Some("grant:p:-:u"));
        assert_eq!(locked("grant:p:-:u"), None);
    }

    #[test]
    fn a_grant_name_splits_back_into_its_parts() {
        assert_eq!(
            parse_grant(&Name::grant("p", Some("acme"), "a:b")),
            Some(("p", Some("acme"), "a:b"))
        );
        assert_eq!(
            parse_grant(&Name::grant("p", None, "u")),
            Some(("p", None, "u"))
        );
        assert_eq!(parse_grant("token:p:-:u"), None);
    }
}
