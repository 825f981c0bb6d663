//! Paging through the names of one kind of record (`GET /admin/grants`), on every backend, in
//! bounded steps: a page holds at most `limit` names and looks at a bounded number of records, so
//! no call holds the store (or a Redis server) for long, whatever the number of records.
//!
//! - `memory` and `file`: names in byte order, resumed after the last name looked at.
//! - `redis`: `SCAN cursor MATCH prefix* COUNT n` (never `KEYS`), node by node in a cluster,
//!   resumed at the SCAN cursor (and, when a page ended inside one SCAN batch, after the last name
//!   it returned from that batch). SCAN's guarantee holds: a record present from the first page to
//!   the last is returned; one written or removed meanwhile may or may not be, and a resize of
//!   Redis's table during the paging may return a name twice. A SCAN cursor means nothing to
//!   another server: the cursor holds the `run_id` of the server it came from, and one that has
//!   restarted (or failed over) since answers [`StoreError::CursorExpired`] (start again).
//!
//! The cursor is opaque to callers: [`Cursor::encode`] and [`Cursor::parse`] are its only forms.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{io, Backend, Store, StoreError, RECORDS};

/// Where the next page starts.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Redis Cluster: the index of the master (in address order) being scanned.
    pub(super) node: usize,
    /// Redis: the SCAN cursor.
    pub(super) scan: u64,
    /// Redis: the `run_id` of the server the SCAN cursor belongs to (it means nothing to another
    /// server, or to the same one after a restart: those give [`StoreError::CursorExpired`]).
    pub(super) run: Option<String>,
    /// The last name returned (memory, file: the last looked at); the page starts after it.
    pub(super) after: Option<String>,
}

/// One page: names, and the cursor of the next page (`None`: this was the last).
#[derive(Debug, Default)]
pub struct Page {
    pub names: Vec<String>,
    pub next: Option<Cursor>,
}

/// The longest cursor accepted (base64 of the node, the SCAN cursor and a record name).
pub const MAX_CURSOR_LEN: usize = 2048;

/// Records looked at per page for each name it may return (a filter that keeps few records ends
/// a page early, with a cursor, rather than reading the whole store in one call).
const LOOK_PER_NAME: usize = 20;

impl Cursor {
    /// The cursor as callers see it: URL-safe base64, no padding.
    pub fn encode(&self) -> String {
        let text = format!(
            "{}.{}.{}.{}",
            self.node,
            self.scan,
            self.run.as_deref().unwrap_or(""),
            self.after.as_deref().unwrap_or("")
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    /// A cursor [`Cursor::encode`] made; `None` for anything else.
    pub fn parse(s: &str) -> Option<Cursor> {
        if s.len() > MAX_CURSOR_LEN {
            return None;
        }
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let mut parts = text.splitn(4, '.');
        let node = parts.next()?.parse().ok()?;
        let scan = parts.next()?.parse().ok()?;
        let run = parts.next()?;
        if !run.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let after = parts.next()?;
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Some(Cursor {
            node,
            scan,
            run: some(run),
            after: some(after),
        })
    }
}

impl Store {
    /// A page of the names starting with `prefix` that `keep` accepts, from `cursor` (`None`: the
    /// first page); at most `limit` names. A page may hold fewer (even none) and still have a next
    /// one: only `next == None` means the end.
    pub fn page(
        &self,
        prefix: &str,
        keep: &dyn Fn(&str) -> bool,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        let budget = limit.saturating_mul(LOOK_PER_NAME);
        let after = cursor.and_then(|c| c.after.as_deref());
        match &self.backend {
            Backend::Redis(r) => r.page(prefix, keep, cursor.cloned().unwrap_or_default(), limit),
            Backend::Memory(m) => {
                let map = m.lock().unwrap_or_else(|p| p.into_inner());
                let mut names: Vec<&str> = map
                    .keys()
                    .map(|k| &**k)
                    .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| *k > a))
                    .collect();
                // The `budget + 1` smallest, in order: one beyond the budget tells whether more follow.
                if names.len() > budget + 1 {
                    names.select_nth_unstable(budget);
                    names.truncate(budget + 1);
                }
                names.sort_unstable();
                Ok(take_page(names.into_iter(), keep, limit, budget))
            }
            Backend::File(f) => {
                let tx = f.db.begin_read().map_err(io)?;
                let t = tx.open_table(RECORDS).map_err(io)?;
                let range = match after {
                    Some(a) if a >= prefix => {
                        t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    }
                    _ => t.range::<&str>(prefix..),
                }
                .map_err(io)?;
                let mut names = Vec::new();
                for item in range {
                    let (k, _) = item.map_err(io)?;
                    let k = k.value();
                    if !k.starts_with(prefix) || names.len() > budget {
                        break;
                    }
                    names.push(k.to_string());
                }
                Ok(take_page(
                    names.iter().map(String::as_str),
                    keep,
                    limit,
                    budget,
                ))
            }
        }
    }
}

/// Memory and file: from names in order, those `keep` accepts, until `limit` of them or `budget`
/// looked at; the cursor resumes after the last name looked at.
fn take_page<'a>(
    mut names: impl Iterator<Item = &'a str>,
    keep: &dyn Fn(&str) -> bool,
    limit: usize,
    budget: usize,
) -> Page {
    let mut page = Page::default();
    let mut looked = 0;
    let mut last = None;
    for n in names.by_ref() {
        looked += 1;
        last = Some(n);
        if keep(n) {
            page.names.push(n.to_string());
        }
        if page.names.len() == limit || looked == budget {
            break;
        }
    }
    if names.next().is_some() {
        page.next = Some(Cursor {
            after: last.map(str::to_string),
            ..Cursor::default()
        });
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every page until the end: the names in order of appearance, and the number of pages.
    pub(crate) fn all_pages(
        s: &Store,
        prefix: &str,
        keep: &dyn Fn(&str) -> bool,
        limit: usize,
    ) -> (Vec<String>, usize) {
        let (mut names, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            pages += 1;
            assert!(pages < 1000, "the paging ends");
            let p = s.page(prefix, keep, cursor.as_ref(), limit).unwrap();
            assert!(p.names.len() <= limit);
            names.extend(p.names);
            // Through its text form, as callers hand it back.
            match p.next {
                Some(c) => cursor = Some(Cursor::parse(&c.encode()).unwrap()),
                None => return (names, pages),
            }
        }
    }

    fn exercise(s: &Store) {
        for i in 0..57 {
            s.put(&format!("grant:p:-:u{i:02}"), b"x", None).unwrap();
        }
        s.put("grant:q:-:u00", b"x", None).unwrap();
        s.put("token:p:0:-:-", b"x", None).unwrap();
        let (names, pages) = all_pages(s, "grant:p:", &|_| true, 10);
        assert_eq!(names.len(), 57);
        assert_eq!(pages, 6);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 57, "each name once");
        // A filter that keeps few names: pages end after a bounded look, the end still comes.
        let (names, _) = all_pages(s, "grant:", &|n| n.ends_with("u00"), 1);
        assert_eq!(names, vec!["grant:p:-:u00", "grant:q:-:u00"]);
        let (none, pages) = all_pages(s, "nothing:", &|_| true, 5);
        assert!(none.is_empty());
        assert_eq!(pages, 1);
    }

    #[test]
    fn memory_and_file_stores_page_through_every_name_once() {
        exercise(&Store::memory());
        let dir = std::env::temp_dir().join(format!("authsidecar-page-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = super::super::crypto::parse_key(&super::super::crypto::generate_key()).unwrap();
        exercise(&Store::open_file(&dir.join("t.db"), &key, None).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cursor_survives_its_text_form_and_nothing_else_parses() {
        let c = Cursor {
            node: 2,
            scan: 77,
            run: Some("0123abcd".into()),
            after: Some("grant:p:-:a.b:c".into()),
        };
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
        assert_eq!(
            Cursor::parse(&Cursor::default().encode()),
            Some(Cursor::default())
        );
        for bad in [
            "",
            "!!",
            "bm90IGEgY3Vyc29y",
            &"A".repeat(MAX_CURSOR_LEN + 1),
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
