// authsidecar admin console. Talks to the admin JSON API with the session cookie; every call that
// changes something carries the session's CSRF token. Data is put on the page as text only.
'use strict';

const csrf = document.querySelector('meta[name="csrf-token"]').content;

async function api(method, path, json) {
  const headers = method === 'GET' ? {} : { 'X-CSRF-Token': csrf };
  const init = { method, headers, credentials: 'same-origin' };
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  }
  const r = await fetch(path, init);
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
  const forms = await loadFormMeta();
  for (const p of r.body.profiles) {
    const edit = forms.editable.includes(p.name)
      ? el('button', { type: 'button', className: 'edit', 'data-profile': p.name, onclick: () => openForm(p.name) }, 'Edit')
      : '';
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
      el('td', { className: 'token-status' }, tokenStatus(p)), el('td', {}, button, ' ', edit)));
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

// ---- The profile form: one file per profile in [admin] profiles_dir, checked while typed ----

let formMeta = { available: false, editable: [], types: [], client_auth: [], locations: [], connectors: [] };
// Whether the open profile has a secret set (it is never sent back: only "set").
let secretSet = false;
// The rows' values the form does not show (payload_format, max_length, …), kept as they were.
const rowExtras = new WeakMap();
let checkTimer = null;
let checkSeq = 0;
const CHECK_DELAY_MS = 400;

async function loadFormMeta() {
  const r = await api('GET', '/admin/profile-form');
  if (r.status === 200) formMeta = r.body;
  document.getElementById('pf-new').disabled = !formMeta.available;
  document.getElementById('pf-unavailable').textContent = formMeta.available ? '' : (formMeta.reason || errorText(r.body, r.status));
  document.getElementById('pf-dir').textContent = formMeta.available ? `Folder: ${formMeta.profiles_dir}` : '';
  return formMeta;
}

function fill(select, values, blank) {
  select.replaceChildren();
  if (blank != null) select.append(el('option', { value: '' }, blank));
  for (const v of values) select.append(el('option', { value: v }, v));
}

function input(cls, value, placeholder) {
  const i = el('input', { className: cls, placeholder });
  i.value = value ?? '';
  return i;
}

function addRow(kind, data) {
  const box = document.getElementById(`pf-${kind}`);
  const d = data || {};
  const row = el('div', { className: 'row' });
  if (kind === 'scope' || kind === 'token_params') {
    row.append(input('key', d.key, 'name'), input('value', d.value, 'value'));
  } else if (kind === 'fields') {
    const where = el('select', { className: 'in' });
    fill(where, formMeta.locations.length ? formMeta.locations : ['header', 'payload', 'query', 'path']);
    where.value = d.in || 'header';
    row.append(where, input('key', d.key, 'header, parameter or key'), input('value', d.value, 'Bearer {{access_token}}'));
  } else {
    const secret = el('input', { type: 'checkbox', className: 'secret' });
    secret.checked = d.secret === true;
    row.append(input('key', d.key, 'key'), input('label', d.label, 'label'),
      el('label', { className: 'inline' }, secret, 'secret'), input('pattern', d.pattern, 'pattern (optional)'));
  }
  const extras = { ...d };
  for (const k of ['key', 'value', 'in', 'label', 'secret', 'pattern']) delete extras[k];
  rowExtras.set(row, extras);
  row.append(el('button', { type: 'button', className: 'remove', onclick: () => { row.remove(); scheduleCheck(); } }, 'Remove'),
    el('span', { className: 'field-error' }));
  box.append(row);
  return row;
}

function rowsOf(kind) {
  const out = [];
  for (const row of document.querySelectorAll(`#pf-${kind} .row`)) {
    const v = { ...(rowExtras.get(row) || {}) };
    for (const i of row.querySelectorAll('input, select')) {
      const k = i.className.split(' ')[0];
      v[k] = i.type === 'checkbox' ? i.checked : i.value;
    }
    out.push(v);
  }
  return out;
}

const TEXT_FIELDS = ['type', 'identity_provider', 'preset', 'client_id', 'client_auth', 'token_url', 'connector', 'tenant_pattern'];
const CODE_FIELDS = ['authorization_url', 'refresh_url'];

function isCode() {
  return document.getElementById('pf-type').value === 'oauth2_authorization_code';
}

// The form as the API takes it.
function collectForm() {
  const f = {};
  for (const k of TEXT_FIELDS) f[k] = document.getElementById(`pf-${k}`).value;
  if (isCode()) {
    for (const k of CODE_FIELDS) f[k] = document.getElementById(`pf-${k}`).value;
    f.user_fields = rowsOf('user_fields');
  }
  const typed = document.getElementById('pf-client_secret').value;
  if (document.getElementById('pf-client_secret-clear').checked) f.client_secret = null;
  else if (typed !== '') f.client_secret = { value: typed };
  else f.client_secret = secretSet ? { set: true } : null;
  f.tenancy = document.getElementById('pf-tenancy').checked;
  f.scope = rowsOf('scope');
  f.token_params = rowsOf('token_params');
  f.fields = rowsOf('fields');
  return f;
}

function showKind() {
  for (const e of document.querySelectorAll('#profile-form .code-only')) e.hidden = !isCode();
}

function clearErrors() {
  for (const e of document.querySelectorAll('#profile-form .field-error')) e.textContent = '';
  for (const e of document.querySelectorAll('#profile-form .invalid')) e.classList.remove('invalid');
  document.getElementById('pf-errors').replaceChildren();
}

// Where an error of `field` (a key path inside the profile) is shown.
function errorPlace(field) {
  const direct = document.querySelector(`#profile-form [data-error-for="${CSS.escape(field)}"]`);
  if (direct) return { span: direct, input: document.getElementById(`pf-${field}`) };
  let m = field.match(/^(fields|user_fields|scope|token_params)\[(\d+)\](?:\.(.+))?$/);
  if (m) {
    const row = document.querySelectorAll(`#pf-${m[1]} .row`)[Number(m[2])];
    if (row) return { span: row.querySelector('.field-error'), input: m[3] ? row.querySelector(`.${CSS.escape(m[3])}`) : null, prefix: m[3] };
  }
  m = field.match(/^(scope|token_params)\.(.+)$/);
  if (m) {
    for (const row of document.querySelectorAll(`#pf-${m[1]} .row`)) {
      if (row.querySelector('.key').value.trim() === m[2]) return { span: row.querySelector('.field-error'), input: row.querySelector('.value') };
    }
  }
  const top = field.split(/[.[]/)[0];
  const span = document.querySelector(`#profile-form [data-error-for="${CSS.escape(top)}"]`);
  return span ? { span, prefix: field } : null;
}

function showErrors(errors) {
  clearErrors();
  const general = document.getElementById('pf-errors');
  for (const e of errors) {
    const place = e.field ? errorPlace(e.field) : null;
    if (!place) {
      general.append(el('li', {}, e.field ? `${e.field}: ${e.message}` : e.message));
      continue;
    }
    const text = place.prefix ? `${place.prefix}: ${e.message}` : e.message;
    place.span.textContent = place.span.textContent ? `${place.span.textContent}; ${text}` : text;
    if (place.input) place.input.classList.add('invalid');
  }
  const status = document.getElementById('pf-status');
  status.textContent = errors.length === 0 ? 'No errors: ready to save.' : `${errors.length} error(s).`;
  status.className = errors.length === 0 ? 'hint ok' : 'hint error';
}

function scheduleCheck() {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(checkForm, CHECK_DELAY_MS);
}

async function checkForm() {
  const seq = ++checkSeq;
  const body = collectForm();
  body.name = document.getElementById('pf-name').value;
  const r = await api('POST', '/admin/profile-form/validate', body);
  if (seq !== checkSeq) return;
  if (r.status !== 200) {
    showErrors([{ field: '', message: errorText(r.body, r.status) }]);
    return;
  }
  showErrors(r.body.errors);
}

function resetForm(name, values) {
  const v = values || {};
  // A file of another type (written by hand) keeps its type.
  fill(document.getElementById('pf-type'), v.type && !formMeta.types.includes(v.type) ? [...formMeta.types, v.type] : formMeta.types);
  fill(document.getElementById('pf-client_auth'), formMeta.client_auth, '(default: basic)');
  fill(document.getElementById('pf-connector'), formMeta.connectors, '(none)');
  const presets = document.getElementById('pf-presets');
  presets.replaceChildren();
  for (const p of formMeta.presets || []) presets.append(el('option', { value: p.name }, p.provider));
  const nameInput = document.getElementById('pf-name');
  nameInput.value = name || '';
  nameInput.disabled = !!name;
  for (const k of [...TEXT_FIELDS, ...CODE_FIELDS]) {
    const e = document.getElementById(`pf-${k}`);
    e.value = v[k] ?? (e.tagName === 'SELECT' && k === 'type' ? formMeta.types[0] : '');
  }
  secretSet = !!(v.client_secret && v.client_secret.set);
  const secret = document.getElementById('pf-client_secret');
  secret.value = '';
  secret.placeholder = secretSet ? 'set (kept unless you type a new one)' : '';
  document.getElementById('pf-client_secret-clear').checked = false;
  document.getElementById('pf-tenancy').checked = v.tenancy === true;
  for (const kind of ['scope', 'token_params', 'fields', 'user_fields']) {
    document.getElementById(`pf-${kind}`).replaceChildren();
    for (const row of v[kind] || []) addRow(kind, row);
  }
  const other = v.other_keys || [];
  document.getElementById('pf-other').textContent = other.length
    ? `Also in the file, kept as written: ${other.join(', ')}.` : '';
  document.getElementById('pf-title').textContent = name ? `Edit profile ${name}` : 'New profile';
  document.getElementById('pf-delete').hidden = !name;
  document.getElementById('pf-result').replaceChildren();
  document.getElementById('pf-status').textContent = '';
  clearErrors();
  showKind();
  const form = document.getElementById('profile-form');
  form.hidden = false;
  form.scrollIntoView();
}

async function openForm(name) {
  await loadFormMeta();
  if (!name) {
    resetForm(null, { fields: [{ in: 'header', key: 'Authorization', value: 'Bearer {{access_token}}' }] });
    return;
  }
  const r = await api('GET', `/admin/profile-form/${encodeURIComponent(name)}`);
  if (r.status !== 200) {
    document.getElementById('pf-unavailable').textContent = errorText(r.body, r.status);
    return;
  }
  resetForm(name, r.body);
  scheduleCheck();
}

function showResult(ok, lines) {
  const out = document.getElementById('pf-result');
  out.replaceChildren();
  out.append(el('p', { className: ok ? 'ok' : 'error' }, lines[0]));
  if (lines.length > 1) {
    const list = el('ul', {});
    for (const l of lines.slice(1)) list.append(el('li', {}, l));
    out.append(list);
  }
}

async function saveForm() {
  const name = document.getElementById('pf-name').value.trim();
  if (!name) {
    showErrors([{ field: 'name', message: 'a profile needs a name' }]);
    return;
  }
  const r = await api('PUT', `/admin/profile-form/${encodeURIComponent(name)}`, collectForm());
  if (r.status === 200 || r.status === 201) {
    showResult(true, [`Saved ${r.body.file}; ${r.body.summary}`]);
    const wasOpen = document.getElementById('pf-name').disabled;
    secretSet = secretSet || !!document.getElementById('pf-client_secret').value;
    document.getElementById('pf-client_secret').value = '';
    if (!wasOpen) await openForm(name);
    showResult(true, [`Saved ${r.body.file}; ${r.body.summary}`]);
    await loadProfiles();
    return;
  }
  const errors = (r.body && r.body.error && r.body.error.errors) || [];
  showResult(false, [errorText(r.body, r.status), ...errors]);
  if (r.status === 422) scheduleCheck();
}

async function deleteForm() {
  const name = document.getElementById('pf-name').value;
  const r = await api('DELETE', `/admin/profile-form/${encodeURIComponent(name)}`);
  if (r.status === 200) {
    document.getElementById('profile-form').hidden = true;
    document.getElementById('pf-unavailable').textContent = `Deleted ${name}; ${r.body.summary}`;
    await loadProfiles();
    return;
  }
  const errors = (r.body && r.body.error && r.body.error.errors) || [];
  showResult(false, [errorText(r.body, r.status), ...errors]);
}

document.getElementById('pf-new').addEventListener('click', () => openForm(null));
document.getElementById('pf-save').addEventListener('click', saveForm);
document.getElementById('pf-delete').addEventListener('click', deleteForm);
document.getElementById('pf-close').addEventListener('click', () => { document.getElementById('profile-form').hidden = true; });
document.getElementById('pf-type').addEventListener('change', showKind);
for (const b of document.querySelectorAll('#profile-form button.add')) {
  b.addEventListener('click', () => { addRow(b.dataset.add); scheduleCheck(); });
}
document.getElementById('profile-form').addEventListener('input', scheduleCheck);
document.getElementById('profile-form').addEventListener('change', scheduleCheck);
document.getElementById('profile-form').addEventListener('submit', (e) => e.preventDefault());

document.getElementById('tab-headers').addEventListener('click', () => showTab('headers'));
document.getElementById('tab-response').addEventListener('click', () => showTab('response'));
document.getElementById('tab-request').addEventListener('click', () => showTab('request'));
document.getElementById('reload').addEventListener('click', reload);
document.getElementById('sign-out').addEventListener('click', signOut);
loadProfiles();
