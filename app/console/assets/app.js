// The operator console: one page, routed by the URL's fragment (#/accounts, #/issue, …).
// Everything it shows from the service or from a person is written as text (textContent
// through dom.js), never parsed as HTML.

import { ApiError, api, token, whenUnauthorized } from './api.js';
import {
  $, cidrList, confirmDialog, copyText, fill, h, isoToLocalInput, localInputToIso, toast, when,
} from './dom.js';
import { cleanServerUrl, clientConfigs, cnameRecord } from './snippets.js';

const PAGE = 50;
const EXPIRING_DAYS = 30; // "expiring" tag
const STALE_DAYS = 90; // "stale" tag
const DAY = 86400 * 1000;
const USERNAME = /^[0-9a-fA-F-]{36}$/;

const state = {
  publicUrl: undefined, // PUBLIC_URL as /admin/health tells; undefined: not asked yet
  accountsOffset: 0,
};

// ---------------------------------------------------------------- routing

const VIEWS = ['signin', 'accounts', 'account', 'issue', 'audit', 'health'];

function parseRoute() {
  const hash = window.location.hash;
  if (!hash.startsWith('#/')) return null; // e.g. the skip link's #main
  const [view, ...rest] = hash.slice(2).split('/');
  return { view: VIEWS.includes(view) ? view : 'accounts', param: decodeURIComponent(rest.join('/')) };
}

function show(view) {
  for (const name of VIEWS) $(`#view-${name}`).hidden = name !== view;
  const signedIn = view !== 'signin';
  $('#nav').hidden = !signedIn;
  $('#signout').hidden = !signedIn;
  const section = view === 'account' ? 'accounts' : view;
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.view === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const title = $(`#view-${view} h1`);
  document.title = `${title.textContent} · acme-delegate console`;
}

/** Leaving a view forgets any key it showed: a key is never shown twice. */
function forgetKeys() {
  fill($('#issue-result'));
  fill($('#account-issued'));
  $('#issue-form').hidden = false;
  $('#issue-again').hidden = true;
}

async function route() {
  const { hash } = window.location;
  const wanted = parseRoute();
  if (wanted === null) return;
  forgetKeys();
  if (!token.get()) {
    if (wanted.view !== 'signin') {
      window.location.replace('#/signin');
      return;
    }
  } else if (wanted.view === 'signin') {
    window.location.replace('#/accounts');
    return;
  }
  show(wanted.view);
  $('#main').focus({ preventScroll: true });
  const loaders = {
    signin: () => $('#signin-token').focus(),
    accounts: () => { fill($('#accounts-table tbody')); return loadAccounts(); },
    account: () => loadAccount(wanted.param),
    issue: () => $('#i-domain').focus(),
    audit: () => { fill($('#audit-table tbody')); return loadAudit(); },
    health: () => loadHealth(false),
  };
  delete document.body.dataset.ready;
  try {
    await loaders[wanted.view]();
  } catch (error) {
    report(error);
  } finally {
    if (window.location.hash === hash) document.body.dataset.ready = hash; // for tests
  }
}

function report(error) {
  if (error instanceof ApiError) toast(error.message);
  else throw error;
}

// ---------------------------------------------------------------- sign in / out

async function signIn(event) {
  event.preventDefault();
  const input = $('#signin-token');
  const given = input.value.trim();
  const message = $('#signin-error');
  message.textContent = '';
  if (!given) {
    message.textContent = 'Enter the admin token.';
    return;
  }
  try {
    const health = await api('GET', '/admin/health', { bearer: given });
    state.publicUrl = health.public_url;
  } catch (error) {
    message.textContent = error instanceof ApiError ? error.message : 'Sign-in failed.';
    input.select();
    return;
  }
  token.set(given);
  input.value = '';
  window.location.hash = '#/accounts';
}

function signOut(reason) {
  token.forget();
  state.publicUrl = undefined;
  forgetKeys();
  for (const table of ['#accounts-table', '#audit-table']) fill($(`${table} tbody`));
  fill($('#health-cards'));
  fill($('#account-facts'));
  for (const form of document.querySelectorAll('form')) form.reset();
  $('#signin-error').textContent = reason || '';
  if (window.location.hash === '#/signin') route();
  else window.location.hash = '#/signin';
}

// ---------------------------------------------------------------- accounts

function accountTags(account) {
  const now = Date.now();
  const tags = [];
  if (account.revoked_at) tags.push(['revoked', 'bad']);
  else if (account.expires_at && Date.parse(account.expires_at) <= now) tags.push(['expired', 'bad']);
  else tags.push(['active', 'ok']);
  if (!account.revoked_at && account.expires_at) {
    const left = Date.parse(account.expires_at) - now;
    if (left > 0 && left < EXPIRING_DAYS * DAY) tags.push(['expiring', 'warn']);
  }
  const used = Date.parse(account.last_used_at || account.created_at);
  if (!account.revoked_at && now - used > STALE_DAYS * DAY) tags.push(['stale', 'warn']);
  if (!account.last_used_at) tags.push(['never used', 'info']);
  return tags.map(([label, kind]) => h('span', { class: `tag ${kind}`, text: label }));
}

function filterQuery() {
  const form = $('#accounts-filter');
  const data = new FormData(form);
  return {
    q: data.get('q').trim(),
    mode: data.get('mode'),
    domain: data.get('domain').trim(),
    stale_days: data.get('stale_days'),
    expiring_days: data.get('expiring_days'),
    include_revoked: form.elements.include_revoked.checked ? 'true' : '',
    limit: PAGE + 1, // one more than shown: is there a next page?
    offset: state.accountsOffset,
  };
}

/** Marks a table busy while it loads (assistive technology and tests wait for it). */
async function busy(table, work) {
  table.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    table.setAttribute('aria-busy', 'false');
  }
}

function loadAccounts() {
  return busy($('#accounts-table'), showAccounts);
}

async function showAccounts() {
  const summary = $('#accounts-summary');
  summary.textContent = 'Loading…';
  const found = await api('GET', '/admin/accounts', { query: filterQuery() });
  const more = found.length > PAGE;
  const rows = found.slice(0, PAGE).map((a) => h('tr', { class: a.revoked_at ? 'revoked' : null },
    h('td', { class: 'name', 'data-label': 'Bound name' }, a.fulldomain),
    h('td', { 'data-label': 'Domain' }, a.domain || h('span', { class: 'muted', text: '—' })),
    h('td', { 'data-label': 'Mode' }, a.mode),
    h('td', { 'data-label': 'State' }, accountTags(a)),
    h('td', { 'data-label': 'Last used' }, when(a.last_used_at)),
    h('td', { 'data-label': 'Expires' }, when(a.expires_at)),
    h('td', { class: 'mono', 'data-label': 'Allowed from' },
      a.allowfrom.length ? a.allowfrom.join(', ') : h('span', { class: 'muted', text: 'anywhere' })),
    h('td', { class: 'note', 'data-label': 'Note' }, a.note || ''),
    h('td', { 'data-label': 'Actions' },
      h('a', { href: `#/account/${encodeURIComponent(a.username)}`,
        'aria-label': `Manage ${a.fulldomain}`, text: 'Manage' }))));
  if (!rows.length) {
    rows.push(h('tr', {}, h('td', { colspan: 9, class: 'empty', text: 'No account matches.' })));
  }
  fill($('#accounts-table tbody'), rows);
  const first = state.accountsOffset + 1;
  const shown = Math.min(found.length, PAGE);
  summary.textContent = shown ? `Accounts ${first}–${first + shown - 1}${more ? ' (more on the next page)' : ''}.`
    : 'No account matches these filters.';
  $('#accounts-prev').disabled = state.accountsOffset === 0;
  $('#accounts-next').disabled = !more;
}

function applyFilters(event) {
  if (event) event.preventDefault();
  state.accountsOffset = 0;
  loadAccounts().catch(report);
}

// ---------------------------------------------------------------- one account

function facts(account) {
  const rows = [
    ['Username', h('code', {}, account.username)],
    ['Bound name', h('code', {}, account.fulldomain)],
    ['Mode', account.mode],
    ['Zone', account.zone],
    ['Domain', account.domain || '—'],
    ['State', accountTags(account)],
    ['Created', when(account.created_at)],
    ['Last used', when(account.last_used_at)],
    ['Expires', when(account.expires_at)],
    ['Revoked', account.revoked_at ? when(account.revoked_at) : 'no'],
    ['Allowed from', account.allowfrom.length ? account.allowfrom.join(', ') : 'anywhere'],
    ['Values per name', account.max_values === null ? "the service's default" : account.max_values],
    ['Note', account.note || ''],
  ];
  if (account.mode === 'delegated') rows.push(['CNAME to create', h('code', {}, cnameRecord(account))]);
  return rows.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]);
}

let current = null; // the account the account view shows

async function loadAccount(username) {
  current = null;
  const result = $('#account-result');
  result.hidden = true;
  fill(result);
  // Nothing of the account shown before stays while this one loads.
  $('#account-title').textContent = 'Account';
  fill($('#account-facts'));
  $('#account-edit').reset();
  for (const id of ['#account-rotate', '#account-revoke']) $(id).disabled = true;
  if (!USERNAME.test(username)) throw new ApiError(404, 'account_not_found');
  const account = await api('GET', `/admin/accounts/${encodeURIComponent(username)}`);
  showAccount(account);
}

function showAccount(account) {
  current = account;
  $('#account-title').textContent = account.fulldomain;
  document.title = `${account.fulldomain} · acme-delegate console`;
  fill($('#account-facts'), facts(account));
  const form = $('#account-edit');
  form.elements.allowfrom.value = account.allowfrom.join('\n');
  form.elements.note.value = account.note || '';
  form.elements.expires.value = isoToLocalInput(account.expires_at);
  const revoked = Boolean(account.revoked_at);
  $('#account-rotate').disabled = revoked;
  $('#account-revoke').disabled = revoked;
}

function announce(children, bad = false) {
  const result = $('#account-result');
  result.className = bad ? 'result bad' : 'result';
  fill(result, children);
  result.hidden = false;
  result.focus();
}

async function saveAccount(event) {
  event.preventDefault();
  if (!current) return;
  const form = event.target;
  const expires = localInputToIso(form.elements.expires.value);
  if (expires === undefined) {
    announce('The expiry is not a date and time.', true);
    return;
  }
  const body = {
    allowfrom: cidrList(form.elements.allowfrom.value),
    note: form.elements.note.value.trim() || null,
    expires_at: expires,
  };
  try {
    const account = await api('PATCH', `/admin/accounts/${encodeURIComponent(current.username)}`, { body });
    showAccount(account);
    announce('Saved.');
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    announce(error.message, true);
  }
}

async function rotate() {
  if (!current) return;
  const account = current;
  const sure = await confirmDialog('Rotate the key?',
    `A new key for ${account.fulldomain} is made now and the old one stops working at once. `
    + 'Clients keep failing until they have the new one. Its TXT values stay.', 'Rotate key');
  if (!sure) return;
  try {
    const issued = await api('POST', `/admin/accounts/${encodeURIComponent(account.username)}/rotate`);
    announce('Rotated: the old key no longer works.');
    await renderIssued($('#account-issued'), { ...account, ...issued }, 'New key for');
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    announce(error.message, true);
  }
}

async function revoke() {
  if (!current) return;
  const account = current;
  const sure = await confirmDialog('Revoke this credential?',
    `${account.fulldomain} stops working at once and its TXT records are deleted from `
    + 'DigitalOcean now. This cannot be undone: a client needs a new credential.', 'Revoke');
  if (!sure) return;
  try {
    const revoked = await api('DELETE', `/admin/accounts/${encodeURIComponent(account.username)}`);
    fill($('#account-issued'));
    showAccount(revoked);
    const removed = revoked.removed_values;
    const pending = revoked.pending_removal || 0;
    announce([h('strong', {}, 'Revoked. '),
      `TXT values removed from ${account.fulldomain}: ${removed}.`,
      removed || pending ? '' : ' (It held none.)',
      pending ? ` ${pending} could not be removed from DigitalOcean yet: the reconciler `
        + 'retries them, and the credential no longer works.' : '']);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    announce(error.message, true);
  }
}

// ---------------------------------------------------------------- issuing

function snippetBlock(config, pre) {
  const copy = h('button', { type: 'button', class: 'quiet small', 'aria-label': `Copy ${config.title}`,
    onclick: () => copyText(pre.textContent, pre), text: 'Copy' });
  return h('section', { class: 'snippet', 'data-client': config.id },
    h('div', { class: 'snippet-head' }, h('h3', {}, config.title), copy),
    config.notes.map((note) => h('p', { class: 'muted' }, note)),
    pre);
}

/** The service's URL for clients: PUBLIC_URL when set, else this page's origin. */
async function serverUrl() {
  if (state.publicUrl === undefined) {
    try {
      state.publicUrl = (await api('GET', '/admin/health')).public_url;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      return window.location.origin; // ask again next time
    }
  }
  return state.publicUrl || window.location.origin;
}

/** The credential with its key, shown once, and each client's configuration. */
async function renderIssued(container, account, heading) {
  const serverInput = h('input', { id: `${container.id}-server`, type: 'text', spellcheck: 'false',
    value: await serverUrl() });
  const serverError = h('p', { class: 'error', role: 'alert' });
  const configs = clientConfigs(account, cleanServerUrl(serverInput.value) || window.location.origin);
  const pres = configs.map((c) => h('pre', { tabindex: 0, 'aria-label': c.title }, h('code', {}, c.text)));
  serverInput.addEventListener('input', () => {
    const url = cleanServerUrl(serverInput.value);
    serverError.textContent = url ? '' : 'Give an http:// or https:// URL.';
    if (!url) return;
    clientConfigs(account, url).forEach((c, i) => { pres[i].firstChild.textContent = c.text; });
  });
  const delegated = account.mode === 'delegated';
  const cname = h('pre', { tabindex: 0 }, h('code', {}, cnameRecord(account)));
  fill(container, h('div', { class: 'issued', tabindex: -1 },
    h('h2', {}, `${heading} `, h('code', {}, account.fulldomain)),
    h('div', { class: 'once' },
      h('p', {}, h('strong', {}, 'The key is shown this once.'),
        ' The service keeps only its hash: copy what you need now. Leaving or reloading this page forgets it.'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Key'), h('dd', { class: 'key', id: `${container.id}-key` }, account.password),
        h('dt', {}, 'Username'), h('dd', { class: 'mono' }, account.username),
        h('dt', {}, 'Bound name'), h('dd', { class: 'mono' }, account.fulldomain),
        h('dt', {}, 'Subdomain'), h('dd', { class: 'mono' }, account.subdomain))),
    delegated ? [h('h3', {}, `Create this record where ${account.domain || 'the domain'} is hosted`),
      snippetBlock({ id: 'cname', title: 'CNAME', notes: [] }, cname)] : null,
    h('div', { class: 'stack narrow' },
      h('label', { for: serverInput.id }, "This service's URL, as clients reach it"),
      serverInput, serverError),
    configs.map((config, i) => snippetBlock(config, pres[i]))));
  container.firstChild.focus();
}

async function issue(event) {
  event.preventDefault();
  const form = event.target;
  const error = $('#issue-error');
  error.textContent = '';
  const domain = form.elements.domain.value.trim();
  const delegated = form.elements.mode.value === 'delegated';
  const expires = localInputToIso(form.elements.expires.value);
  if (!domain) {
    error.textContent = 'Enter the domain the certificate is for.';
    form.elements.domain.focus();
    return;
  }
  if (expires === undefined) {
    error.textContent = 'The expiry is not a date and time.';
    return;
  }
  const maxValues = form.elements.max_values.value;
  const body = {
    domain,
    delegated,
    allowfrom: cidrList(form.elements.allowfrom.value),
    note: form.elements.note.value.trim() || null,
    expires_at: expires,
    max_values: maxValues ? Number(maxValues) : null,
  };
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const account = await api('POST', '/admin/accounts', { body });
    form.reset();
    form.hidden = true; // the credential is what matters now
    $('#issue-again').hidden = false;
    await renderIssued($('#issue-result'), account, 'Issued for');
  } catch (failure) {
    if (!(failure instanceof ApiError)) throw failure;
    error.textContent = failure.message;
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- audit

function loadAudit(event) {
  if (event) event.preventDefault();
  return busy($('#audit-table'), showAudit);
}

async function showAudit() {
  const form = $('#audit-filter');
  const summary = $('#audit-summary');
  const account = form.elements.account.value.trim();
  if (account && !USERNAME.test(account)) {
    summary.textContent = 'An account is its username (36 characters).';
    return;
  }
  const since = localInputToIso(form.elements.since.value);
  const found = await api('GET', '/admin/audit', { query: {
    account, event: form.elements.event.value.trim(), since: since || '',
    limit: form.elements.limit.value || 100,
  } });
  const hideReads = form.elements.hide_reads.checked;
  const shown = hideReads ? found.filter((e) => e.event !== 'admin.read') : found;
  const rows = shown.map((e) => h('tr', {},
    h('td', { class: 'nowrap', 'data-label': 'When' }, when(e.at, { seconds: true })),
    h('td', { class: 'mono nowrap', 'data-label': 'Event' }, e.event),
    h('td', { 'data-label': 'Outcome' }, h('span', { class: `tag ${e.outcome === 'ok' ? 'ok' : 'bad'}`, text: e.outcome })),
    h('td', { class: 'mono', 'data-label': 'Account' }, e.username
      ? h('a', { href: `#/account/${encodeURIComponent(e.username)}`, text: e.username }) : ''),
    h('td', { class: 'mono nowrap', 'data-label': 'Client' }, e.client || ''),
    h('td', { class: 'mono', 'data-label': 'Name' }, e.name || ''),
    h('td', { class: 'note', 'data-label': 'Detail' },
      [e.detail, e.value_fingerprint ? `value ${e.value_fingerprint}` : null].filter(Boolean).join(' · '))));
  if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 7, class: 'empty', text: 'No event matches.' })));
  fill($('#audit-table tbody'), rows);
  const hidden = found.length - shown.length;
  summary.textContent = `${shown.length} events, newest first${hidden ? `; ${hidden} admin reads hidden` : ''}.`;
}

// ---------------------------------------------------------------- health

function card(title, headline, kind, pairs) {
  return h('section', { class: 'card', 'aria-label': title },
    h('h2', {}, title),
    h('p', { class: 'big' }, h('span', { class: `tag ${kind}`, text: headline })),
    h('dl', {}, pairs.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)])));
}

function meter(used, limit) {
  return [h('meter', { min: 0, max: limit, value: used, high: limit * 0.8, optimum: 0,
    'aria-label': `${used} of ${limit}` }), ` ${used} of ${limit}`];
}

async function loadHealth(probe) {
  const health = await api('GET', '/admin/health', { query: { probe: probe ? 'true' : '' } });
  state.publicUrl = health.public_url;
  const db = health.database;
  const dig = health.digitalocean;
  const budget = health.budget;
  const rec = health.reconcile;
  const reach = dig.reachable === null ? ['no call yet', 'info'] : dig.reachable ? ['reachable', 'ok'] : ['unreachable', 'bad'];
  const outcomeKind = { ok: 'ok', skipped: 'info', partial: 'warn', failed: 'bad' }[rec.outcome] || 'info';
  const repairs = Object.entries(rec.repairs).filter(([, n]) => n > 0).map(([kind, n]) => `${kind} ${n}`);
  fill($('#health-cards'),
    card('Database', db.ok ? 'answers' : 'does not answer', db.ok ? 'ok' : 'bad',
      [['Query time', db.ms === null ? '—' : `${db.ms} ms`], ['Version', health.version]]),
    card('DigitalOcean', reach[0], reach[1], [
      ['Last call', when(dig.last_call_at)],
      ['Operation', dig.last_operation || '—'],
      ['Answer', dig.last_status || '—'],
      ['Account budget left', dig.ratelimit_remaining === null ? 'unknown' : String(dig.ratelimit_remaining)],
    ]),
    card('Request budget', `${budget.used_last_minute} in the last minute`,
      budget.used_last_minute >= budget.per_minute * 0.8 ? 'warn' : 'ok', [
        ['Last minute', meter(budget.used_last_minute, budget.per_minute)],
        ['Last hour', meter(budget.used_last_hour, budget.per_hour)],
      ]),
    card('Reconciler', rec.outcome || 'no pass yet', outcomeKind, [
      ['Last pass', when(rec.last_at)],
      ['Took', rec.seconds === null ? '—' : `${rec.seconds} s`],
      ['Repairs', repairs.length ? repairs.join(', ') : 'none'],
      ['Failures', String(rec.failures)],
      ['Every', `${rec.interval} s`],
    ]));
  if (probe) toast(dig.reachable ? 'DigitalOcean answered.' : 'DigitalOcean did not answer.');
}

// ---------------------------------------------------------------- start

function start() {
  $('#signin-form').addEventListener('submit', (e) => { signIn(e).catch(report); });
  $('#signout').addEventListener('click', () => signOut(''));
  $('#accounts-filter').addEventListener('submit', applyFilters);
  $('#accounts-filter').addEventListener('reset', () => setTimeout(applyFilters, 0));
  for (const id of ['#f-mode', '#f-revoked']) $(id).addEventListener('change', () => applyFilters());
  $('#accounts-prev').addEventListener('click', () => {
    state.accountsOffset = Math.max(0, state.accountsOffset - PAGE);
    loadAccounts().catch(report);
  });
  $('#accounts-next').addEventListener('click', () => {
    state.accountsOffset += PAGE;
    loadAccounts().catch(report);
  });
  $('#account-edit').addEventListener('submit', (e) => { saveAccount(e).catch(report); });
  $('#account-rotate').addEventListener('click', () => { rotate().catch(report); });
  $('#account-revoke').addEventListener('click', () => { revoke().catch(report); });
  $('#issue-form').addEventListener('submit', (e) => { issue(e).catch(report); });
  $('#issue-another').addEventListener('click', () => {
    forgetKeys();
    $('#i-domain').focus();
  });
  $('#audit-filter').addEventListener('submit', (e) => { loadAudit(e).catch(report); });
  $('#audit-filter').addEventListener('reset', () => setTimeout(() => loadAudit().catch(report), 0));
  $('#a-hide-reads').addEventListener('change', () => loadAudit().catch(report));
  $('#health-refresh').addEventListener('click', () => loadHealth(false).catch(report));
  $('#health-probe').addEventListener('click', () => loadHealth(true).catch(report));
  $('#skip').addEventListener('click', (e) => { e.preventDefault(); $('#main').focus(); });
  whenUnauthorized(() => signOut('The admin token is no longer accepted: sign in again.'));
  window.addEventListener('hashchange', () => { route(); });
  if (!parseRoute()) {
    window.location.replace(token.get() ? '#/accounts' : '#/signin'); // hashchange routes
    return;
  }
  route();
}

start();
