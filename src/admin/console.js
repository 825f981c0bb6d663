// authsidecar admin console. Talks to the admin JSON API with the session cookie; every call that
// changes something carries the session's CSRF token. Data is put on the page as text only.
'use strict';

const csrf = document.querySelector('meta[name="csrf-token"]').content;

async function api(method, path) {
  const headers = method === 'GET' ? {} : { 'X-CSRF-Token': csrf };
  const r = await fetch(path, { method, headers, credentials: 'same-origin' });
  if (r.status === 401) {
    location.href = '/admin/';
    throw new Error('signed out');
  }
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return { status: r.status, body };
}

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'className') e.className = v;
    else if (k === 'onclick') e.addEventListener('click', v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
  }
  return e;
}

function errorText(body, status) {
  const e = body && body.error;
  return e ? `${e.code}: ${e.message} (request id ${e.request_id})` : `HTTP ${status}`;
}

const TESTABLE = ['oauth2_client_credentials', 'oauth2_password', 'oauth2_jwt_bearer'];
// Authorization code (and three-legged oauth1, per_user): the Test is a sign-in in a new window;
// the console polls for its report.
const SIGN_IN = 'oauth2_authorization_code';
// How often a sign-in test is asked for its result.
const POLL_MS = 1000;
// Signing profiles: the Test sends one signed GET to the profile's first route's upstream.
const SIGNING = ['aws_sigv4', 'hmac', 'oauth1'];
let tokens = [];

function tokenStatus(p) {
  const mine = tokens.filter((t) => t.profile === p.name);
  if (p.per_user || p.type === 'oauth2_authorization_code') {
    const users = new Set(mine.map((t) => `${t.user}\u0000${t.tenant}`));
    return users.size === 0 ? 'no user grants' : `${users.size} user grant(s)`;
  }
  const cached = mine.filter((t) => t.source === 'cache');
  if (TESTABLE.includes(p.type)) {
    if (cached.length === 0) return 'none yet';
    const left = Math.min(...cached.map((t) => t.expires_in));
    return left > 0 ? `cached, expires in ${left} s` : 'cached, expired';
  }
  if (SIGNING.includes(p.type)) return 'signs each request';
  return 'static credential';
}

async function loadTokens() {
  const r = await api('GET', '/admin/tokens');
  tokens = (r.body && r.body.tokens) || [];
  const tbody = document.querySelector('#tokens tbody');
  tbody.replaceChildren();
  if (tokens.length === 0) {
    tbody.append(el('tr', {}, el('td', { colspan: '7' }, 'No tokens held.')));
  }
  for (const t of tokens) {
    const revoke = el('button', { type: 'button', className: 'revoke', onclick: () => revokeToken(t) }, 'Revoke');
    tbody.append(el('tr', { 'data-profile': t.profile },
      el('td', {}, t.profile), el('td', {}, t.user ?? '—'), el('td', {}, t.tenant ?? '—'),
      el('td', {}, t.source), el('td', {}, `${t.expires_in} s`),
      el('td', {}, t.has_refresh_token ? 'yes' : 'no'), el('td', {}, revoke)));
  }
}

async function loadProfiles() {
  await loadTokens();
  const r = await api('GET', '/admin/profiles');
  const tbody = document.querySelector('#profiles tbody');
  tbody.replaceChildren();
  if (r.status !== 200) {
    tbody.append(el('tr', {}, el('td', { colspan: '7', className: 'error' }, errorText(r.body, r.status))));
    return;
  }
  for (const p of r.body.profiles) {
    const signing = SIGNING.includes(p.type);
    const signIn = p.type === SIGN_IN || (p.type === 'oauth1' && p.per_user);
    const testable = signIn || ((TESTABLE.includes(p.type) || signing) && !p.per_user);
    const button = el('button', {
      type: 'button', className: 'test', 'data-profile': p.name,
      title: !testable ? 'No token request to test for this type'
        : signIn ? 'Sign in at the identity provider in a new window and show the token response'
        : signing ? 'Send one signed GET to the first route\'s upstream now' : 'Run the token request now',
      onclick: () => runTest(p.name),
    }, 'Test');
    if (!testable) button.disabled = true;
    tbody.append(el('tr', { 'data-profile': p.name },
      el('td', {}, el('strong', {}, p.name)), el('td', {}, p.type),
      el('td', {}, p.identity_provider ?? '—'), el('td', {}, (p.routes || []).join(', ') || '—'),
      el('td', {}, p.callback_url ? el('code', {}, p.callback_url) : '—'),
      el('td', { className: 'token-status' }, tokenStatus(p)), el('td', {}, button)));
  }
}

function showTab(name) {
  for (const t of ['headers', 'response', 'request']) {
    document.getElementById(`tab-${t}`).setAttribute('aria-selected', String(t === name));
    document.getElementById(`pane-${t}`).hidden = t !== name;
  }
}

// Bumped by every Test: a sign-in test still polling stops when another Test starts.
let testRun = 0;

async function runTest(name) {
  const run = ++testRun;
  const panel = document.getElementById('test-panel');
  const outcome = document.getElementById('test-outcome');
  panel.hidden = false;
  document.getElementById('test-profile').textContent = name;
  outcome.textContent = 'Testing…';
  outcome.className = 'outcome';
  document.getElementById('test-summary').textContent = '';
  document.getElementById('test-login').replaceChildren();
  document.querySelector('#test-headers tbody').replaceChildren();
  document.getElementById('test-body').textContent = '';
  document.querySelector('#test-request tbody').replaceChildren();
  document.getElementById('tab-request').hidden = true;
  const path = `/admin/profiles/${encodeURIComponent(name)}/test`;
  const r = await api('POST', path);
  if (r.status === 202 && r.body && r.body.login_url) {
    await signInTest(run, path, r.body);
    return;
  }
  showReport(r.status, r.body || {});
  await loadProfiles();
}

// An authorization-code profile's Test: the sign-in opens in a new window (the link is shown too,
// in case the window was blocked); the result is polled until it is in, or the test expires.
async function signInTest(run, path, started) {
  const outcome = document.getElementById('test-outcome');
  const link = el('a', { href: started.login_url, target: '_blank', rel: 'noopener', id: 'test-login-link' },
    'Open the sign-in page');
  document.getElementById('test-login').replaceChildren(link, ` (expires in ${started.expires_in} s)`);
  const w = window.open(started.login_url, '_blank');
  if (w) w.opener = null;
  outcome.textContent = 'Waiting for the sign-in in the new window…';
  const until = Date.now() + started.expires_in * 1000;
  const poll = `${path}/${encodeURIComponent(started.test_id)}`;
  while (run === testRun && Date.now() < until) {
    await new Promise((done) => setTimeout(done, POLL_MS));
    if (run !== testRun) return;
    const r = await api('GET', poll);
    if (r.status === 200 && r.body && r.body.state === 'waiting') continue;
    document.getElementById('test-login').replaceChildren();
    if (r.status === 200 && r.body && r.body.report) {
      showReport(200, r.body.report);
    } else {
      showReport(r.status, r.body || {});
    }
    await loadProfiles();
    return;
  }
  if (run === testRun) {
    outcome.textContent = 'Auth Test Failed';
    outcome.className = 'outcome failed';
    document.getElementById('test-summary').textContent = 'The sign-in did not finish before the test expired.';
  }
}

// A test report (or an error answer) on the Headers and Response tabs.
function showReport(status, rep) {
  const outcome = document.getElementById('test-outcome');
  const ok = status === 200 && rep.ok === true;
  outcome.textContent = ok ? 'Auth Test Succeeded' : 'Auth Test Failed';
  outcome.className = `outcome ${ok ? 'ok' : 'failed'}`;
  const parts = [];
  if (status !== 200) parts.push(errorText(rep, status));
  if (rep.token_url) parts.push(`token URL ${rep.token_url}`);
  if (rep.request) parts.push(`${rep.request.method} ${rep.request.url}`);
  if (rep.status != null) parts.push(`HTTP ${rep.status}`);
  if (rep.elapsed_ms != null) parts.push(`${rep.elapsed_ms} ms`);
  if (rep.error) parts.push(`${rep.error.code}: ${rep.error.message}`);
  if (rep.token) parts.push(`token type ${rep.token.token_type}, expires in ${rep.token.expires_in ?? '?'} s`);
  document.getElementById('test-summary').textContent = parts.join(' · ');
  const tbody = document.querySelector('#test-headers tbody');
  tbody.replaceChildren();
  for (const [k, v] of rep.headers || []) tbody.append(el('tr', {}, el('td', {}, k), el('td', {}, v)));
  if ((rep.headers || []).length === 0) tbody.append(el('tr', {}, el('td', { colspan: '2' }, 'No response headers.')));
  document.getElementById('test-body').textContent = rep.body ?? JSON.stringify(rep, null, 2);
  if (rep.request) {
    // The signed request as it was sent (signature, tokens and secrets masked).
    const req = document.querySelector('#test-request tbody');
    for (const [k, v] of rep.request.headers) req.append(el('tr', {}, el('td', {}, k), el('td', {}, v)));
    document.getElementById('tab-request').hidden = false;
  }
  showTab('headers');
}

async function revokeToken(t) {
  const q = new URLSearchParams();
  if (t.user != null) q.set('user', t.user);
  if (t.tenant != null) q.set('tenant', t.tenant);
  const r = await api('DELETE', `/admin/tokens/${encodeURIComponent(t.profile)}?${q}`);
  const out = document.getElementById('revoke-result');
  out.textContent = r.status === 200
    ? `Revoked ${t.profile}${t.user ? ` for ${t.user}` : ''}: cached token dropped ${r.body.cached_token_dropped}, grant deleted ${r.body.grant_deleted}`
    : `Revoke failed: ${errorText(r.body, r.status)}`;
  out.className = r.status === 200 ? 'ok' : 'error';
  await loadProfiles();
}

async function reload() {
  const r = await api('POST', '/admin/reload');
  const out = document.getElementById('reload-result');
  out.replaceChildren();
  if (r.status === 200) {
    out.append(el('p', { className: 'ok' }, r.body.summary));
  } else {
    out.append(el('p', { className: 'error' }, 'Config not reloaded; the running config stays in force.'));
    const list = el('ul', {});
    const errors = r.body && r.body.error && r.body.error.errors;
    for (const e of errors || [errorText(r.body, r.status)]) list.append(el('li', {}, e));
    out.append(list);
  }
  await loadProfiles();
}

async function signOut() {
  await api('POST', '/admin/logout');
  location.href = '/admin/';
}

document.getElementById('tab-headers').addEventListener('click', () => showTab('headers'));
document.getElementById('tab-response').addEventListener('click', () => showTab('response'));
document.getElementById('tab-request').addEventListener('click', () => showTab('request'));
document.getElementById('reload').addEventListener('click', reload);
document.getElementById('sign-out').addEventListener('click', signOut);
loadProfiles();
