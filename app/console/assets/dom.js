// Building the page from data, always as text: nothing here ever parses HTML.

/** An element with properties and children; strings and numbers become text nodes. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A date for people: local time, minutes; the exact UTC instant in the tooltip. */
export function when(iso, { seconds = false } = {}) {
  if (!iso) return h('span', { class: 'muted', text: 'never' });
  const date = new Date(iso);
  const text = date.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
    second: seconds ? '2-digit' : undefined,
  });
  return h('time', { datetime: date.toISOString(), title: date.toISOString(), text });
}

/** A datetime-local input's value as an ISO instant with a zone, or null when empty. */
export function localInputToIso(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

/** An ISO instant as a datetime-local input's value, in local time. */
export function isoToLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** CIDRs typed one a line (commas and spaces work too). */
export function cidrList(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

let toastTimer = 0;
/** A short polite announcement at the bottom of the page. */
export function toast(message) {
  const el = $('#toast');
  el.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.textContent = ''; }, 4000);
}

/** Ask before doing something that cannot be undone; resolves true on "Confirm". */
export function confirmDialog(title, text, confirmLabel) {
  const dialog = $('#confirm');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = confirmLabel;
  return new Promise((resolve) => {
    const done = (answer) => {
      cleanup();
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const ok = () => done(true);
    const cancel = () => done(false);
    const onCancelEvent = (event) => { event.preventDefault(); done(false); };
    function cleanup() {
      $('#confirm-ok').removeEventListener('click', ok);
      $('#confirm-cancel').removeEventListener('click', cancel);
      dialog.removeEventListener('cancel', onCancelEvent);
    }
    $('#confirm-ok').addEventListener('click', ok);
    $('#confirm-cancel').addEventListener('click', cancel);
    dialog.addEventListener('cancel', onCancelEvent); // Escape
    dialog.showModal();
    $('#confirm-cancel').focus(); // the safe choice has the focus
  });
}

/** Copy text; where the clipboard API is unavailable (plain http), select it instead. */
export async function copyText(text, pre) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Copied');
  } catch {
    const range = document.createRange();
    range.selectNodeContents(pre);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    toast('Selected: press Ctrl+C (or Cmd+C) to copy');
  }
}
