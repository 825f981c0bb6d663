//! The `authsidecar` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use authsidecar::config::{Config, CONFIG_ENV, DEFAULT_CONFIG_PATH};
// The mock provider's module is compiled into the command from the library's source (the library
// has it only with its `mock` feature); these are the library modules it names as `crate::…`.
use authsidecar::{config, inject, secret, serve, sign};

/// The built-in mock provider (`src/mock/`): `mock-provider` and `[mock_provider]`. Its test-facing
/// half (counters, faults) is used by the tests through the library's `mock` feature.
#[allow(dead_code, unused_imports)]
mod mock;

/// mimalloc: per-thread free lists for every size a request allocates (a request's state, boxed
/// while it is served, is about 3 KiB: past glibc's per-thread cache).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "authsidecar",
    version,
    about = "A reverse-proxy sidecar that injects authorization into outgoing HTTP calls"
)]
struct Cli {
    /// Config file.
    #[arg(short, long, global = true, env = CONFIG_ENV, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Log line format. Levels come from RUST_LOG (default "info").
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run,
    /// Validate the config: every error with its key path (exit 1), or a summary (exit 0).
    /// Profiles with discovery (`issuer` without endpoint URLs) have their provider's metadata
    /// document read and shown (a document that cannot be read or checked: exit 1).
    Check {
        /// Do not read discovery documents (no network).
        #[arg(long)]
        offline: bool,
    },
    /// Run a profile's token request and show status, headers and body with secrets masked
    /// (exit 0 on success, 1 on failure). Does not touch a running sidecar's cache. A signing
    /// profile (aws_sigv4, hmac, oauth1) sends one signed GET to its first route's upstream (or
    /// --url) and shows the signed request's headers and the answer (exit 0 on a 2xx answer).
    /// An oauth2_authorization_code (or three-legged oauth1) profile is tested by the running
    /// sidecar: its admin API ([admin] listen and token, or --admin-url) starts a sign-in test,
    /// the link is printed, and the report is shown once the sign-in finished (no grant is
    /// kept).
    TestAuth {
        /// Profile name.
        profile: String,
        /// Tenant for profiles with tenancy.
        #[arg(long)]
        tenant: Option<String>,
        /// Signing profiles: the URL to send the signed GET to, instead of the first route's
        /// upstream.
        #[arg(long)]
        url: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// oauth2_authorization_code: how long to wait for the sign-in, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        wait: u64,
        /// oauth2_authorization_code: the running sidecar's admin API (e.g.
        /// http://127.0.0.1:9901) instead of [admin] listen.
        #[arg(long, value_name = "URL")]
        admin_url: Option<String>,
    },
    /// Print a new random store key (32 bytes, base64) for `[store] key`.
    Keygen,
    /// Run the built-in mock provider (OAuth server and echo upstream) alone.
    MockProvider {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9190")]
        listen: std::net::SocketAddr,
        /// Lifetime of the access tokens it issues, e.g. "5s", "1h".
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        token_lifetime: std::time::Duration,
        /// The default client's public keys (a JWKS, a public key PEM or its private key PEM):
        /// it may then authenticate with private_key_jwt.
        #[arg(long, value_name = "FILE")]
        client_keys: Option<PathBuf>,
        /// A trusted JWT bearer grant issuer (the `iss` of its assertions); with --bearer-keys.
        #[arg(long, value_name = "ISS", requires = "bearer_keys")]
        bearer_issuer: Option<String>,
        /// That issuer's public keys (same forms as --client-keys).
        #[arg(long, value_name = "FILE", requires = "bearer_issuer")]
        bearer_keys: Option<PathBuf>,
        #[command(flatten)]
        signed: Box<SignedResources>,
    },
}

/// The mock provider's verifying resources (`/sigv4/…`, `/hmac/…`); each defaults to the demo
/// value of `[mock_provider.sigv4]` and `[mock_provider.hmac]`. Secrets may come from the
/// environment instead of the command line.
#[derive(clap::Args)]
struct SignedResources {
    /// SigV4 resource: the access key id it accepts [default: AKIDEXAMPLE].
    #[arg(long, value_name = "ID")]
    sigv4_access_key_id: Option<String>,
    /// SigV4 resource: the secret access key [default: the AWS documentation's example key].
    #[arg(
        long,
        value_name = "KEY",
        env = "AUTHSIDECAR_MOCK_SIGV4_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    sigv4_secret_access_key: Option<String>,
    /// SigV4 resource: a session token requests must carry (X-Amz-Security-Token).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AUTHSIDECAR_MOCK_SIGV4_SESSION_TOKEN",
        hide_env_values = true
    )]
    sigv4_session_token: Option<String>,
    /// SigV4 resource: the region [default: us-east-1].
    #[arg(long, value_name = "REGION")]
    sigv4_region: Option<String>,
    /// SigV4 resource: the service [default: execute-api].
    #[arg(long, value_name = "SERVICE")]
    sigv4_service: Option<String>,
    /// HMAC resource: the secret [default: demo-hmac-secret].
    #[arg(
        long,
        value_name = "SECRET",
        env = "AUTHSIDECAR_MOCK_HMAC_SECRET",
        hide_env_values = true
    )]
    hmac_secret: Option<String>,
    /// HMAC resource: utf8, base64 or hex [default: utf8].
    #[arg(long, value_name = "ENCODING")]
    hmac_secret_encoding: Option<String>,
    /// HMAC resource: sha1, sha256 or sha512 [default: sha256].
    #[arg(long, value_name = "ALG")]
    hmac_algorithm: Option<String>,
    /// HMAC resource: the signature's encoding, hex or base64 [default: hex].
    #[arg(long, value_name = "ENCODING")]
    hmac_encoding: Option<String>,
    /// HMAC resource: the string_to_sign template
    /// [default: {{method}}\n{{path}}\n{{query}}\n{{timestamp}}\n{{body_sha256}}].
    #[arg(long, value_name = "TEMPLATE")]
    hmac_string_to_sign: Option<String>,
    /// HMAC resource: the header with the signature [default: X-Signature].
    #[arg(long, value_name = "NAME")]
    hmac_signature_header: Option<String>,
    /// HMAC resource: the header with the time [default: X-Timestamp].
    #[arg(long, value_name = "NAME")]
    hmac_timestamp_header: Option<String>,
    /// HMAC resource: the header with the nonce [default: X-Nonce].
    #[arg(long, value_name = "NAME")]
    hmac_nonce_header: Option<String>,
}

impl SignedResources {
    /// The resources' settings; an unknown name or a template that does not parse is an error.
    fn settings(self: Box<Self>) -> anyhow::Result<(config::MockSigV4, config::MockHmac)> {
        let mut v4 = config::MockSigV4::default();
        if let Some(id) = self.sigv4_access_key_id {
            v4.access_key_id = id;
        }
        if let Some(k) = self.sigv4_secret_access_key {
            v4.secret_access_key = k.into();
        }
        v4.session_token = self.sigv4_session_token.map(Into::into);
        if let Some(r) = self.sigv4_region {
            v4.region = r;
        }
        if let Some(s) = self.sigv4_service {
            v4.service = s;
        }
        let mut mac = config::MockHmac::default();
        if let Some(s) = self.hmac_secret {
            mac.secret = s.into();
        }
        if let Some(e) = &self.hmac_secret_encoding {
            mac.secret_encoding = config::named(&config::HMAC_SECRET_ENCODINGS, e)
                .map_err(|e| anyhow::anyhow!("--hmac-secret-encoding: {e}"))?;
        }
        if let Some(a) = &self.hmac_algorithm {
            mac.algorithm = config::named(&config::HMAC_ALGORITHMS, a)
                .map_err(|e| anyhow::anyhow!("--hmac-algorithm: {e}"))?;
        }
        if let Some(e) = &self.hmac_encoding {
            mac.encoding = config::named(&config::HMAC_ENCODINGS, e)
                .map_err(|e| anyhow::anyhow!("--hmac-encoding: {e}"))?;
        }
        if let Some(t) = self.hmac_string_to_sign {
            mac.string_to_sign = t;
        }
        for (value, slot) in [
            (self.hmac_signature_header, &mut mac.signature_header),
            (self.hmac_timestamp_header, &mut mac.timestamp_header),
            (self.hmac_nonce_header, &mut mac.nonce_header),
        ] {
            if let Some(h) = value {
                *slot = h.to_ascii_lowercase();
            }
        }
        mac.signer().map_err(|e| anyhow::anyhow!("--hmac-*: {e}"))?;
        Ok((v4, mac))
    }
}

/// Public keys for the mock provider from a file given on the command line.
fn mock_keys(file: &std::path::Path) -> anyhow::Result<sign::verify::PublicKeys> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    sign::verify::PublicKeys::load(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn init_logging(format: LogFormat) {
    authsidecar::logging::init(match format {
        LogFormat::Text => authsidecar::logging::Format::Text,
        LogFormat::Json => authsidecar::logging::Format::Json,
    });
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{}: {} error(s)", path.display(), errors.0.len());
        for e in &errors.0 {
            eprintln!("  {e}");
        }
        ExitCode::from(1)
    })
}

/// How a listener's TLS reads in the summary.
fn tls_note(tls: Option<&authsidecar::config::ServerTls>) -> &'static str {
    match tls {
        None => "",
        Some(t) if t.client_ca.is_some() => " (TLS, client certificates required)",
        Some(_) => " (TLS)",
    }
}

fn summary(config: &Config) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "proxy listen: {}{}\nadmin listen: {}{}\n",
        config.proxy.listen,
        tls_note(config.proxy.tls.as_ref()),
        config.admin.listen,
        tls_note(config.admin.tls.as_ref())
    ));
    if let Some(m) = &config.mock_provider {
        out.push_str(&format!("mock provider: {}\n", m.listen));
    }
    out.push_str(&format!("routes ({}):\n", config.routes.len()));
    for r in &config.routes {
        let names: Vec<&str> = r.profiles.iter().map(|p| &**p).collect();
        let mut via = String::new();
        if let Some(c) = &r.connector {
            via.push_str(&format!("  via connector {}", c.name));
        }
        if r.tls.client_cert.is_some() {
            via.push_str("  client certificate");
        }
        out.push_str(&format!(
            "  {} -> {}  profiles: {}{via}\n",
            r.prefix,
            // The fixed query may hold a ${VAR} value: not printed.
            if r.upstream.query.is_some() {
                format!("{}?…", r.upstream.raw.split('?').next().unwrap_or(""))
            } else {
                r.upstream.raw.clone()
            },
            names.join(", ")
        ));
    }
    if let Some(a) = &config.auth {
        out.push_str(&format!(
            "auth listen: {}{}\ncallback link (register it at the IdP): {}\n",
            a.listen,
            tls_note(a.tls.as_ref()),
            a.callback_url()
        ));
    }
    if !config.connectors.is_empty() {
        out.push_str(&format!("connectors ({}):\n", config.connectors.len()));
        for c in config.connectors.values() {
            out.push_str(&format!(
                "  {} -> {}{}\n",
                c.name,
                c.url,
                if c.credentials.is_some() {
                    "  (with credentials)"
                } else {
                    ""
                }
            ));
        }
    }
    for w in &config.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out.push_str(&format!("profiles ({}):\n", config.profiles.len()));
    for p in config.profiles.values() {
        let mut fields: Vec<String> = p
            .fields
            .iter()
            .map(|f| format!("{}:{}", f.location.as_str(), f.key))
            .collect();
        if let authsidecar::config::ProfileKind::Sign(s) = &p.kind {
            match &s.method {
                authsidecar::config::SignMethod::SigV4 { .. } => {
                    fields.push("signed: header:authorization, header:x-amz-*".into())
                }
                authsidecar::config::SignMethod::OAuth1 { placement, .. } => {
                    fields.push(format!("signed: oauth_* in {}", placement.as_str()))
                }
                authsidecar::config::SignMethod::Hmac { .. } => {}
            }
        }
        out.push_str(&format!(
            "  {} ({})  fields: {}\n",
            p.name,
            p.kind.type_name(),
            fields.join(", ")
        ));
        for u in config.presets.iter().filter(|u| *u.profile == *p.name) {
            out.push_str(&format!(
                "    preset {} ({}) filled:\n",
                u.preset, u.provider
            ));
            for (key, value) in &u.filled {
                out.push_str(&format!("      {key} = {value}\n"));
            }
            if let Some(h) = &u.hint {
                out.push_str(&format!("      hint: {h}\n"));
            }
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { offline } => match load(&cli.config) {
            Ok(config) => {
                print!("{}: OK\n{}", cli.config.display(), summary(&config));
                if offline {
                    return ExitCode::SUCCESS;
                }
                match runtime().map(|rt| rt.block_on(check_discovery(&config))) {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::from(1),
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::from(1)
                    }
                }
            }
            Err(code) => code,
        },
        Command::Run => {
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match runtime().and_then(|rt| {
                rt.block_on(async {
                    let _mock = start_mock_provider(&config).await?;
                    authsidecar::run(config, Some(cli.config.clone()))
                        .await
                        .context("startup failed")
                })
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Keygen => {
            println!("{}", authsidecar::store::crypto::generate_key());
            ExitCode::SUCCESS
        }
        Command::TestAuth {
            profile,
            tenant,
            url,
            json,
            wait,
            admin_url,
        } => {
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let sign_in = SignInWait {
                wait: std::time::Duration::from_secs(wait),
                admin_url,
            };
            match runtime().and_then(|rt| {
                rt.block_on(test_auth(
                    config,
                    &profile,
                    tenant.as_deref(),
                    url.as_deref(),
                    json,
                    sign_in,
                ))
            }) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::MockProvider {
            listen,
            token_lifetime,
            client_keys,
            bearer_issuer,
            bearer_keys,
            signed,
        } => {
            let result = runtime().and_then(|rt| {
                rt.block_on(async {
                    let (sigv4, hmac) = signed.settings()?;
                    let mut settings = mock::MockSettings {
                        token_lifetime,
                        sigv4,
                        hmac,
                        ..Default::default()
                    };
                    if let Some(f) = &client_keys {
                        settings
                            .client_keys
                            .push((config::DEFAULT_MOCK_CLIENT_ID.into(), mock_keys(f)?));
                    }
                    if let (Some(iss), Some(f)) = (&bearer_issuer, &bearer_keys) {
                        settings.bearer_issuers.push((iss.clone(), mock_keys(f)?));
                    }
                    let mock = mock::MockProvider::start_with(listen, settings)
                        .await
                        .context("binding the mock provider")?;
                    eprintln!("mock provider listening on http://{}", mock.addr);
                    wait_for_stop().await;
                    mock.shutdown().await;
                    Ok(())
                })
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `[mock_provider]`: the built-in mock provider, started beside the sidecar (the demo config has
/// one). It runs until the process ends.
async fn start_mock_provider(config: &Config) -> anyhow::Result<Option<mock::MockProvider>> {
    let Some(m) = &config.mock_provider else {
        return Ok(None);
    };
    let settings = mock::MockSettings {
        clients: vec![(m.client_id.clone(), m.client_secret.clone())],
        users: vec![(m.username.clone(), m.password.clone())],
        token_lifetime: m.token_lifetime,
        client_keys: m
            .client_keys
            .iter()
            .map(|k| (m.client_id.clone(), k.clone()))
            .collect(),
        bearer_issuers: m.bearer_issuer.iter().cloned().collect(),
        sigv4: m.sigv4.clone(),
        hmac: m.hmac.clone(),
        ..mock::MockSettings::default()
    };
    let provider = mock::MockProvider::start_with(m.listen, settings)
        .await
        .with_context(|| {
            format!(
                "startup failed: cannot listen on {} (mock provider)",
                m.listen
            )
        })?;
    tracing::info!(addr = %provider.addr, "mock provider started");
    Ok(Some(provider))
}

/// `test-auth` of an `oauth2_authorization_code` profile: how long to wait for the sign-in, and
/// where the running sidecar's admin API is (default: `[admin] listen`).
struct SignInWait {
    wait: std::time::Duration,
    admin_url: Option<String>,
}

async fn test_auth(
    config: Config,
    name: &str,
    tenant: Option<&str>,
    url: Option<&str>,
    json: bool,
    sign_in: SignInWait,
) -> anyhow::Result<bool> {
    let profile = config
        .profile(name)
        .with_context(|| format!("no profile named {name:?}"))?;
    // Authorization code and three-legged OAuth 1.0a: a sign-in, run by the running sidecar.
    let signs_in = match &profile.kind {
        authsidecar::config::ProfileKind::OAuth(o) => {
            matches!(o.grant, authsidecar::config::Grant::AuthorizationCode(_))
        }
        authsidecar::config::ProfileKind::Sign(s) => matches!(
            &s.method,
            authsidecar::config::SignMethod::OAuth1 {
                three_legged: Some(_),
                ..
            }
        ),
        _ => false,
    };
    if signs_in && url.is_none() {
        return test_sign_in(&config, name, tenant, json, sign_in).await;
    }
    if let authsidecar::config::ProfileKind::Sign(_) = profile.kind {
        return test_signing(config, name, tenant, url, json).await;
    }
    if url.is_some() {
        anyhow::bail!(
            "profile {name:?} (type {}): --url is for signing profiles (aws_sigv4, hmac, oauth1)",
            profile.kind.type_name()
        );
    }
    let source = authsidecar::oauth::OAuthSource::new(profile)
        .map_err(anyhow::Error::msg)?
        .with_context(|| {
            format!(
                "profile {name:?} (type {}) makes no token request",
                profile.kind.type_name()
            )
        })?;
    let tenant = match tenant {
        Some(t) => Some(
            authsidecar::proxy::tenant_for(t.as_bytes(), profile.tenant_pattern.as_ref())
                .map_err(|e| anyhow::anyhow!(e.message))?,
        ),
        None => None,
    };
    if matches!(
        source.settings().grant,
        authsidecar::config::Grant::AuthorizationCode(_) | authsidecar::config::Grant::UserPassword
    ) {
        anyhow::bail!("profile {name:?}: its tokens belong to end users; nothing to test without a user (use the login flow)");
    }
    if tenant.is_none() && source.settings().token_url_has_tenant {
        anyhow::bail!("profile {name:?}: the token URL uses {{tenant}}; pass --tenant NAME");
    }
    let (report, _) = authsidecar::oauth::test_auth::run(&source, tenant.as_deref()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.ok)
}

/// How often `test-auth` asks the sidecar whether the sign-in finished.
const SIGN_IN_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// An authorization-code profile's Test, run by the running sidecar: its admin API starts the
/// test and gives the sign-in link (printed); the test is polled until it finished, expired, or
/// `--wait` passed. The report is the machine grants' (tokens masked; no grant is kept).
async fn test_sign_in(
    config: &Config,
    name: &str,
    tenant: Option<&str>,
    json: bool,
    sign_in: SignInWait,
) -> anyhow::Result<bool> {
    use authsidecar::inject::encode::encode;
    use std::io::Write;
    let client = authsidecar::admin::client::AdminClient::new(
        &config.admin,
        sign_in.admin_url.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("profile {name:?} is tested by the running sidecar: {e}"))?;
    let mut path = format!("/admin/profiles/{}/test", encode(name));
    if let Some(t) = tenant {
        path.push_str(&format!("?tenant={}", encode(t)));
    }
    let (status, v) = client
        .call(http::Method::POST, &path)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "profile {name:?} is tested by the running sidecar, whose admin API did not answer ({e}); start it, or give --admin-url"
            )
        })?;
    let refused = |status: u16, v: &serde_json::Value| {
        anyhow::anyhow!(
            "the sidecar at {} answered {status}: {}: {}",
            client.base(),
            v["error"]["code"].as_str().unwrap_or("-"),
            v["error"]["message"]
                .as_str()
                .unwrap_or("not the admin API?")
        )
    };
    if status != 202 {
        return Err(refused(status, &v));
    }
    let (Some(id), Some(link)) = (v["test_id"].as_str(), v["login_url"].as_str()) else {
        anyhow::bail!("the sidecar's answer has no test_id or login_url: {v}");
    };
    let expires_in = v["expires_in"].as_u64().unwrap_or(0);
    let wait = sign_in.wait;
    let say = format!(
        "Sign in to run the test (the link expires in {expires_in} s):\n\n  {link}\n\nWaiting for the sign-in (up to {} s)...\n",
        wait.as_secs()
    );
    // With --json, stdout is the report alone.
    if json {
        eprint!("{say}");
    } else {
        print!("{say}");
        let _ = std::io::stdout().flush();
    }
    let poll = format!(
        "{path_only}/{}",
        encode(id),
        path_only = path.split('?').next().unwrap_or(&path)
    );
    let deadline = tokio::time::Instant::now() + wait;
    let report = loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            eprintln!("Auth Test Failed: no sign-in within {} s", wait.as_secs());
            return Ok(false);
        }
        tokio::time::sleep(SIGN_IN_POLL.min(deadline - now)).await;
        let (status, v) = client
            .call(http::Method::GET, &poll)
            .await
            .map_err(anyhow::Error::msg)?;
        match (status, v["state"].as_str()) {
            (200, Some("waiting")) => continue,
            (200, Some(_)) => break v["report"].clone(),
            (404, _) => {
                eprintln!("Auth Test Failed: the test expired before the sign-in finished");
                return Ok(false);
            }
            _ => return Err(refused(status, &v)),
        }
    };
    let report: authsidecar::oauth::test_auth::TestReport =
        serde_json::from_value(report).context("the sidecar's report has an unexpected shape")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.ok)
}

/// A signing profile's Test: one signed GET through the proxy's pipeline, as a running sidecar
/// would send it (its own memory store and token cache; nothing is shared with one).
async fn test_signing(
    config: Config,
    name: &str,
    tenant: Option<&str>,
    url: Option<&str>,
    json: bool,
) -> anyhow::Result<bool> {
    let snapshot = authsidecar::proxy::Snapshot::build(
        std::sync::Arc::new(config),
        std::sync::Arc::new(authsidecar::store::Store::memory()),
        authsidecar::metrics::Metrics::new(),
    )
    .map_err(anyhow::Error::msg)?;
    let proxy = authsidecar::proxy::Proxy::new(
        std::sync::Arc::new(snapshot),
        authsidecar::token::TokenCache::new(),
        Default::default(),
    );
    let report = proxy
        .probe(name, url, tenant)
        .await
        .map_err(|e| anyhow::anyhow!("profile {name:?}: {}", e.message))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.ok)
}

/// SIGINT or SIGTERM.
async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

/// `check`: reads the discovery document of every profile that uses one and prints what it says.
/// Returns false when one cannot be read or fails its checks.
async fn check_discovery(config: &Config) -> bool {
    let mut entries = Vec::new();
    for p in config.profiles.values() {
        let Some(o) = p.kind.oauth() else { continue };
        let (true, Some(issuer)) = (o.discover, &o.issuer) else {
            continue;
        };
        match authsidecar::oauth::http::IdpHttp::new(&o.tls, o.connector.clone(), o.idp_timeout) {
            Ok(http) => {
                let needs = authsidecar::oauth::discovery::Needs::of(o);
                entries.push((p.name.to_string(), issuer.clone(), needs, http))
            }
            Err(e) => {
                println!("discovery: profiles.{}: {e}", p.name);
                return false;
            }
        }
    }
    let mut ok = true;
    for (profile, r) in authsidecar::oauth::discovery::check_all(entries).await {
        match r {
            Ok(m) => {
                println!("discovery: profiles.{profile}:");
                for line in m.describe() {
                    println!("  {line}");
                }
            }
            Err(e) => {
                ok = false;
                println!("discovery: profiles.{profile}: FAILED: {e}");
            }
        }
    }
    if !ok {
        println!("(at run time such a profile is not ready and its calls get idp_unavailable until its document is read; `check --offline` skips the network)");
    }
    ok
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}
