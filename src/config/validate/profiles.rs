//! `[profiles.NAME]`: each type's keys (see `raw::RawKind`) → the typed [`Profile`].

use super::fields::field;
use super::oauth::{
    auth_code_settings, endpoint_url, jwt_bearer_settings, oauth_settings, OAuthContext, UrlContext,
};
use super::*;

/// `[profiles.NAME]`: the profiles that loaded, and the names of those that did not.
pub(super) fn profiles(
    raw_profiles: toml::Table,
    v: &mut V,
) -> (IndexMap<Arc<str>, Arc<Profile>>, HashSet<String>) {
    let mut profiles = IndexMap::new();
    // Profiles that failed to parse are remembered so routes naming them don't add a second error.
    let mut broken = HashSet::new();
    for (name, value) in raw_profiles {
        let path = format!("profiles.{name}");
        if !valid_name(&name) {
            v.err(
                &path,
                "invalid profile name; expected letters, digits, '-', '_' or '.'",
            );
        }
        let Some(rp) = RawProfile::collect(value, &path, &mut v.errors) else {
            broken.insert(name);
            continue;
        };
        match profile(&name, rp, &path, v) {
            Some(p) => {
                profiles.insert(Arc::<str>::from(name.as_str()), Arc::new(p));
            }
            None => {
                broken.insert(name);
            }
        }
    }
    (profiles, broken)
}

/// Per-user profiles need the auth listener; without a durable store their grants are lost on
/// restart.
pub(super) fn check_per_user(
    profiles: &IndexMap<Arc<str>, Arc<Profile>>,
    store: &StoreConfig,
    auth: Option<&AuthSettings>,
    v: &mut V,
) {
    if matches!(store, StoreConfig::Memory) && profiles.values().any(|p| p.per_user) {
        v.warn(
            "store: end users' grants are kept in memory only ([store] kind = \"file\" keeps them across restarts)"
                .to_string(),
        );
    }
    for (name, p) in profiles {
        if p.per_user && auth.is_none() {
            v.err(
                &format!("profiles.{name}"),
                "a per-user profile needs an [auth] section (listen, public_url) for login links, the start page and the callback",
            );
        }
    }
}

fn profile(name: &str, rp: RawProfile, path: &str, v: &mut V) -> Option<Profile> {
    let before = v.errors.len();
    let RawProfile {
        ty,
        common,
        mut kind,
    } = rp;
    let tenancy = common.tenancy;
    let per_user = match &kind {
        RawKind::AuthorizationCode { per_user: p, .. } => {
            if p.per_user == Some(false) {
                v.err(
                    &format!("{path}.per_user"),
                    "an authorization-code profile is always per user; remove per_user",
                );
            }
            true
        }
        other => other.per_user().and_then(|p| p.per_user).unwrap_or(false),
    };
    if let Some(p) = kind.per_user() {
        if !per_user {
            for (key, set) in [
                ("user_fields", p.user_fields.is_some()),
                ("on_authorized", p.on_authorized.is_some()),
            ] {
                if set {
                    v.err(
                        &format!("{path}.{key}"),
                        "only used with per_user = true (credentials that belong to end users)",
                    );
                }
            }
        }
    }
    // With per_user = true the credentials come from each end user, not from the config.
    if per_user {
        let (username, password, api_key) = match &kind {
            RawKind::Basic { credentials: c, .. } | RawKind::Password { credentials: c, .. } => {
                (c.username.is_some(), c.password.is_some(), false)
            }
            RawKind::ApiKey { key, .. } => (false, false, key.api_key.is_some()),
            _ => (false, false, false),
        };
        for (key, set) in [
            ("username", username),
            ("password", password),
            ("api_key", api_key),
        ] {
            if set {
                v.err(
                    &format!("{path}.{key}"),
                    "with per_user = true each end user enters it on the start page; remove it",
                );
            }
        }
    }
    let allow_insecure_http = match &kind {
        RawKind::ClientCredentials { oauth }
        | RawKind::Password { oauth, .. }
        | RawKind::AuthorizationCode { oauth, .. }
        | RawKind::JwtBearer { oauth, .. } => oauth.allow_insecure_http,
        _ => None,
    };
    let (raw_user_fields, on_authorized) = match kind.per_user_mut() {
        Some(p) => (p.user_fields.take(), p.on_authorized.take()),
        None => (None, None),
    };
    if let Some(u) = &on_authorized {
        if u.contains('{') {
            v.err(
                &format!("{path}.on_authorized"),
                "a fixed URL is expected; the body says which profile, user and tenant",
            );
        } else {
            let ctx = UrlContext {
                path,
                tenancy,
                allow_insecure_http,
            };
            endpoint_url(u, "on_authorized", &ctx, v);
        }
    }
    let required = |key: &str, missing: bool, v: &mut V| {
        if missing {
            v.err(
                &format!("{path}.{key}"),
                format!("required for type \"{}\"", ty.name()),
            );
        }
    };
    let api_key_fields = |v: &mut V| {
        if common.fields.as_ref().is_none_or(|f| f.is_empty()) {
            v.err(
                &format!("{path}.fields"),
                "required for type \"api_key\": say where the key goes, e.g. [[profiles.NAME.fields]] in = \"header\", key = \"X-Api-Key\", value = \"{{api_key}}\"",
            );
        }
    };
    let oauth_ctx = OAuthContext {
        ty,
        tenancy,
        path,
        needs_document: false,
    };
    let kind = match kind {
        RawKind::None => Some(ProfileKind::None),
        RawKind::Basic { .. } if per_user => Some(ProfileKind::UserBasic),
        RawKind::Basic { credentials, .. } => {
            let (u, p) = (credentials.username, credentials.password);
            required("username", u.is_none(), v);
            required("password", p.is_none(), v);
            if let Some(u) = &u {
                if u.expose().contains(':') {
                    v.err(
                        &format!("{path}.username"),
                        "must not contain ':' (RFC 7617)",
                    );
                }
            }
            match (u, p) {
                (Some(username), Some(password)) => Some(ProfileKind::Basic { username, password }),
                _ => None,
            }
        }
        RawKind::ApiKey { .. } if per_user => {
            api_key_fields(v);
            Some(ProfileKind::UserApiKey)
        }
        RawKind::ApiKey { key, .. } => {
            api_key_fields(v);
            required("api_key", key.api_key.is_none(), v);
            key.api_key.map(|key| ProfileKind::ApiKey { key })
        }
        RawKind::ClientCredentials { oauth } => {
            oauth_settings(*oauth, Grant::ClientCredentials, &oauth_ctx, v)
                .map(|o| ProfileKind::OAuth(Box::new(o)))
        }
        RawKind::Password { oauth, .. } if per_user => {
            v.warn(format!(
                "{path}: oauth2_password is a legacy grant (RFC 9700 §2.4); end users type their IdP password into the sidecar's page"
            ));
            oauth_settings(*oauth, Grant::UserPassword, &oauth_ctx, v)
                .map(|o| ProfileKind::OAuth(Box::new(o)))
        }
        RawKind::Password {
            oauth, credentials, ..
        } => {
            let (u, p) = (credentials.username, credentials.password);
            required("username", u.is_none(), v);
            required("password", p.is_none(), v);
            v.warn(format!(
                "{path}: oauth2_password is a legacy grant (RFC 9700 §2.4); prefer client credentials"
            ));
            // Check the OAuth keys even when the credentials are missing: every error at once.
            let grant = match (u, p) {
                (Some(username), Some(password)) => Some(Grant::Password { username, password }),
                _ => None,
            };
            let settings = oauth_settings(
                *oauth,
                grant.clone().unwrap_or(Grant::ClientCredentials),
                &oauth_ctx,
                v,
            );
            match (settings, grant) {
                (Some(o), Some(_)) => Some(ProfileKind::OAuth(Box::new(o))),
                _ => None,
            }
        }
        k @ (RawKind::AwsSigV4 { .. } | RawKind::Hmac { .. } | RawKind::OAuth1 { .. }) => {
            super::signing::signing(k, path, per_user, v)
        }
        RawKind::AuthorizationCode { oauth, code, .. } => {
            let ctx = UrlContext {
                path,
                tenancy,
                allow_insecure_http,
            };
            // Discovery: an issuer, and an endpoint left out (or `openid` asked for: the
            // provider's keys check the id_token).
            let openid = oauth.scope.as_ref().is_some_and(|s| {
                let pairs: Vec<(String, String)> =
                    s.iter().map(|(k, x)| (k.clone(), x.clone())).collect();
                crate::oauth::id_token::wants_openid(&pairs)
            });
            let needs_document = code.authorization_url.is_none() || openid;
            let discover = oauth.issuer.is_some() && (needs_document || oauth.token_url.is_none());
            if openid && oauth.issuer.is_none() {
                v.warn(format!(
                    "{path}: the scope asks for openid but the profile has no issuer: the id_token is not validated; set issuer"
                ));
            }
            let mut url_uses = Vec::new();
            let code = auth_code_settings(code, &ctx, discover, &mut url_uses, v);
            let oauth_ctx = OAuthContext {
                needs_document,
                ..oauth_ctx
            };
            let settings = oauth_settings(*oauth, Grant::ClientCredentials, &oauth_ctx, v);
            match (settings, code) {
                (Some(mut o), Some(c)) => {
                    url_uses.append(&mut o.dynamic);
                    o.dynamic = url_uses;
                    o.grant = Grant::AuthorizationCode(c);
                    Some(ProfileKind::OAuth(Box::new(o)))
                }
                _ => None,
            }
        }
        RawKind::JwtBearer { mut oauth, bearer } => {
            let bearer = jwt_bearer_settings(*bearer, tenancy, path, v);
            if let Some((_, Some(token_uri))) = &bearer {
                if oauth.token_url.is_none() {
                    oauth.token_url = Some(token_uri.clone());
                }
            }
            // The grant goes in before the settings' fingerprint is taken: a changed key or claim
            // is a new token cache key. Without one the OAuth keys are still checked.
            match bearer {
                Some((b, _)) => {
                    oauth_settings(*oauth, Grant::JwtBearer(Box::new(b)), &oauth_ctx, v)
                        .map(|o| ProfileKind::OAuth(Box::new(o)))
                }
                None => {
                    let _ = oauth_settings(*oauth, Grant::ClientCredentials, &oauth_ctx, v);
                    None
                }
            }
        }
    };

    let connector = v.connector_ref(common.connector, path);
    let mut kind = kind;
    if let Some(ProfileKind::OAuth(o)) = &mut kind {
        o.connector = connector.clone();
    }
    let user_fields = match raw_user_fields {
        Some(raw) => user_fields(raw, path, v),
        None => Vec::new(),
    };
    let user_field_keys: Vec<String> = user_fields.iter().map(|f| f.key.clone()).collect();
    if let Some(ProfileKind::OAuth(o)) = &mut kind {
        dynamic_vars(o, path, tenancy, per_user, &user_field_keys, v);
    }
    let raw_fields = match common.fields {
        Some(f) => f,
        None => default_fields(
            ty,
            kind.as_ref()
                .and_then(|k| k.oauth())
                .and_then(|o| o.token_response.as_ref())
                .and_then(|r| r.token_type.as_deref()),
        ),
    };
    let mut fields = Vec::new();
    let mut seen: HashSet<(Location, String)> = HashSet::new();
    for (i, rf) in raw_fields.into_iter().enumerate() {
        let fp = format!("{path}.fields[{i}]");
        if let Some(f) = field(rf, &fp, kind.as_ref(), tenancy, &user_field_keys, v) {
            let norm = match f.location {
                Location::Header => f.key.replace('_', "-"),
                _ => f.key.clone(),
            };
            if !seen.insert((f.location, norm)) {
                v.err(
                    &format!("{fp}.key"),
                    format!(
                        "\"{}\" is already set by another {} field of this profile",
                        f.key,
                        f.location.as_str()
                    ),
                );
            }
            fields.push(f);
        }
    }
    let formats: HashSet<PayloadFormat> = fields
        .iter()
        .filter(|f| f.location == Location::Payload)
        .map(|f| f.payload_format)
        .collect();
    if formats.len() > 1 {
        v.err(
            &format!("{path}.fields"),
            "payload fields disagree on payload_format; use the same for all",
        );
    }
    if ty == ProfileType::Hmac
        && !fields.iter().any(|f| {
            f.value
                .vars()
                .any(|v| *v == crate::template::Var::Signature)
        })
        && !v.has_error(&format!("{path}.fields"))
    {
        v.err(
            &format!("{path}.fields"),
            "an hmac profile places its signature with a field: e.g. [[profiles.NAME.fields]] in = \"header\", key = \"X-Signature\", value = \"{{signature}}\"",
        );
    }
    let signs_itself = matches!(ty, ProfileType::AwsSigV4 | ProfileType::OAuth1);
    // `aws_sigv4` and `oauth1` place their own signature; their fields are optional extras.
    if fields.is_empty() && !signs_itself && !matches!(kind, Some(ProfileKind::None) | None) {
        v.err(
            &format!("{path}.fields"),
            "empty: the credential would never be sent; remove `fields` to use the default or add one",
        );
    }
    let tenant_pattern = match common.tenant_pattern {
        None => None,
        Some(_) if !tenancy => {
            v.err(
                &format!("{path}.tenant_pattern"),
                "only used with tenancy = true",
            );
            None
        }
        Some(p) => match regex::RegexBuilder::new(&format!("^(?:{p})$"))
            .size_limit(1 << 20)
            .build()
        {
            Ok(r) => Some(r),
            Err(e) => {
                v.err(
                    &format!("{path}.tenant_pattern"),
                    format!(
                        "not a valid regular expression: {}",
                        e.to_string().lines().last().unwrap_or("")
                    ),
                );
                None
            }
        },
    };
    if v.errors.len() > before {
        return None;
    }
    Some(Profile {
        name: Arc::from(name),
        kind: kind?,
        identity_provider: common.identity_provider,
        tenancy,
        tenant_pattern,
        fields,
        user_fields,
        per_user,
        on_authorized,
        connector,
    })
}

/// `user_fields` ("Additional Fields"): what the start page asks the end user for.
fn user_fields(raw: Vec<RawUserField>, path: &str, v: &mut V) -> Vec<UserField> {
    let mut out: Vec<UserField> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let fp = format!("{path}.user_fields[{i}]");
        let key_ok = !r.key.is_empty()
            && r.key.len() <= 64
            && r.key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !key_ok {
            v.err(
                &format!("{fp}.key"),
                "expected 1 to 64 letters, digits, '_' or '-'",
            );
            continue;
        }
        if out.iter().any(|f| f.key == r.key) {
            v.err(
                &format!("{fp}.key"),
                format!("\"{}\" is already a user field of this profile", r.key),
            );
            continue;
        }
        if r.key == "tenant" {
            v.err(
                &format!("{fp}.key"),
                "\"tenant\" is asked by the start page itself when tenancy = true",
            );
            continue;
        }
        let pattern = match &r.pattern {
            None => None,
            Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
                Ok(re) => Some(re),
                Err(e) => {
                    let first = e.to_string();
                    let first = first.lines().last().unwrap_or("").trim().to_string();
                    v.err(
                        &format!("{fp}.pattern"),
                        format!("not a valid regular expression: {first}"),
                    );
                    continue;
                }
            },
        };
        let max_length = r.max_length.unwrap_or(DEFAULT_USER_FIELD_MAX_LENGTH);
        if max_length == 0 || max_length > 4096 {
            v.err(&format!("{fp}.max_length"), "expected 1 to 4096");
            continue;
        }
        out.push(UserField {
            label: r.label.unwrap_or_else(|| r.key.clone()),
            key: r.key,
            secret: r.secret,
            pattern,
            max_length,
        });
    }
    out
}

/// `fields` of a profile that leaves them out: OAuth types send the access token as a bearer
/// token (or as `token_response.token_type` says), basic its Basic value; api_key has no default
/// (it must say where the key goes).
fn default_fields(ty: ProfileType, token_type: Option<&str>) -> Vec<RawField> {
    let authorization = |value: &str| {
        vec![RawField {
            location: "header".into(),
            key: "Authorization".into(),
            value: Some(value.into()),
            payload_format: None,
        }]
    };
    match ty {
        ProfileType::Basic => authorization("Basic {{basic}}"),
        t if t.is_oauth() => authorization(&format!(
            "{} {{{{access_token}}}}",
            token_type.unwrap_or("Bearer")
        )),
        _ => Vec::new(),
    }
}

/// Checks where the profile's identity-provider requests use `{tenant}`, `{{context.NAME}}` and
/// `{{user_field.NAME}}` ([`crate::config::dynamic`]): a variable the profile cannot have is an
/// error at its key. The context names are kept with login tickets (per-user profiles).
fn dynamic_vars(
    o: &mut OAuthSettings,
    path: &str,
    tenancy: bool,
    per_user: bool,
    user_field_keys: &[String],
    v: &mut V,
) {
    use crate::config::dynamic::DynVar;
    for u in &o.dynamic {
        let at = format!("{path}.{}", u.key);
        match &u.var {
            // URLs: checked with the URL (`endpoint_url`, token_url).
            DynVar::Tenant if !tenancy && u.key.contains('.') => v.err(
                &at,
                "uses {tenant} but the profile has tenancy = false; set tenancy = true",
            ),
            DynVar::UserField(k) if !per_user => v.err(
                &at,
                format!("uses {{{{user_field.{k}}}}} but the profile is not per user: user fields exist only for end users' sign-ins"),
            ),
            DynVar::UserField(k) if !user_field_keys.contains(k) => v.err(
                &at,
                format!("uses {{{{user_field.{k}}}}}, which is not declared in user_fields; add [[{path}.user_fields]] key = \"{k}\""),
            ),
            _ => {}
        }
    }
    if let Grant::AuthorizationCode(c) = &mut o.grant {
        for u in &o.dynamic {
            if let DynVar::Context(n) = &u.var {
                if !c.authorization_context.contains(n) {
                    c.authorization_context.push(n.clone());
                }
            }
        }
    }
}
