// The admin API, with the admin token from this tab's session storage as Bearer.
// No cookie is involved anywhere, so no other site can act with it.

const TOKEN_KEY = 'acme-delegate.admin-token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  forget: () => sessionStorage.removeItem(TOKEN_KEY),
};

const MESSAGES = {
  forbidden: 'The admin token was refused.',
  admin_api_disabled: 'The admin API is off on this service.',
  account_not_found: 'No such account.',
  name_in_use: 'That name already has a credential.',
  zone_not_found: 'No DigitalOcean zone this service may write holds that name.',
  invalid_domain: 'That is not a valid domain name.',
  invalid_allowfrom_cidr: 'An "allowed from" entry is not an address or CIDR.',
  not_configured: 'Delegated names need ACME_DELEGATE_DELEGATION_DOMAIN on the service.',
  bad_request: 'The service refused the input.',
  too_many_requests: 'Too many requests: wait a moment.',
  dns_provider_unavailable: 'DigitalOcean is unavailable or the request budget is spent: try again shortly.',
  overloaded: 'The service is busy: try again.',
  internal_error: 'The service failed; its log says why.',
};

export class ApiError extends Error {
  constructor(status, code) {
    super(MESSAGES[code] || `The service answered ${status}${code ? ` (${code})` : ''}.`);
    this.status = status;
    this.code = code;
  }
}

/** Called when the token stops working mid-session (changed on the server). */
let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

/** One request; answers the decoded JSON, or throws ApiError. */
export async function api(method, path, { body, query, bearer } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== '') url.searchParams.set(key, String(value));
  }
  const headers = { Accept: 'application/json', Authorization: `Bearer ${bearer || token.get() || ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit', cache: 'no-store', redirect: 'error',
    });
  } catch {
    throw new ApiError(0, 'unreachable');
  }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const error = new ApiError(response.status, data && typeof data.error === 'string' ? data.error : null);
    if (response.status === 401 && !bearer) onUnauthorized(error);
    throw error;
  }
  return data;
}
