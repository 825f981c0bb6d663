use super::*;
fn key() -> StoreKey {
    crypto::parse_key(&crypto::generate_key()).unwrap()
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("authsidecar-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("tokens.db")
}

fn exercise(s: &Store) {
    s.put("tok:a", b"one", None).unwrap();
    s.put("tok:b", b"two", Some(now_unix() + 3600)).unwrap();
    s.put("tok:old", b"gone", Some(now_unix() - 1)).unwrap();
    s.put("other", b"x", None).unwrap();
    assert_eq!(s.get("tok:a").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(s.get("tok:b").unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(s.get("tok:old").unwrap(), None, "expired reads as absent");
    let mut names = s.names("tok:").unwrap();
    names.sort();
    assert_eq!(
        names,
        vec!["tok:a", "tok:b"],
        "the expired record was removed"
    );
    assert_eq!(s.take("tok:a").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(s.take("tok:a").unwrap(), None, "single use");
    assert!(s.remove("tok:b").unwrap());
    assert!(!s.remove("tok:b").unwrap());

    // Counters: start at 1, keep their first expiry, restart once expired.
    assert_eq!(s.count("n:a").unwrap(), 0);
    assert_eq!(s.incr("n:a", Some(now_unix() + 3600)).unwrap(), 1);
    assert_eq!(s.incr("n:a", None).unwrap(), 2);
    assert_eq!(s.count("n:a").unwrap(), 2);
    s.put("n:old", b"7", Some(now_unix() - 1)).unwrap();
    assert_eq!(s.incr("n:old", Some(now_unix() + 60)).unwrap(), 1);
    // Replace: each write sees the one before it.
    assert_eq!(s.replace("p", b"1", None).unwrap(), None);
    assert_eq!(
        s.replace("p", b"2", None).unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(s.get("p").unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn memory_store_behaves() {
    exercise(&Store::memory());
}

#[test]
fn file_store_behaves_and_survives_reopening() {
    let path = temp_path("reopen");
    let k = key();
    {
        let s = Store::open_file(&path, &k, None).unwrap();
        exercise(&s);
        s.put("grant:u1", b"refresh-token-canary-77", None).unwrap();
    }
    let s = Store::open_file(&path, &k, None).unwrap();
    assert_eq!(
        s.get("grant:u1").unwrap().as_deref(),
        Some(&b"refresh-token-canary-77"[..])
    );
    drop(s);
    let raw = std::fs::read(&path).unwrap();
    assert!(
        !raw.windows(8).any(|w| w == b"canary-7"),
        "no plaintext in the file"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn the_previous_key_still_opens_and_records_move_to_the_new_key() {
    let path = temp_path("rotate");
    let (k1, k2) = (key(), key());
    Store::open_file(&path, &k1, None)
        .unwrap()
        .put("g", b"v", None)
        .unwrap();
    let s = Store::open_file(&path, &k2, Some(&k1)).unwrap();
    assert_eq!(s.get("g").unwrap().as_deref(), Some(&b"v"[..]));
    drop(s);
    // Re-sealed under k2 on that read: k2 alone opens it now.
    let s = Store::open_file(&path, &k2, None).unwrap();
    assert_eq!(s.get("g").unwrap().as_deref(), Some(&b"v"[..]));
    drop(s);
    // A wrong key reads nothing (and says so in the log), it does not crash.
    let s = Store::open_file(&path, &key(), None).unwrap();
    assert_eq!(s.get("g").unwrap(), None);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
