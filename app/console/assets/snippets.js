// Copy-ready client configuration for a freshly issued (or rotated) credential.
// These follow the README's "Pointing clients at it" sections: keep the two in step.

const SAFE_URL = /^https?:\/\/[A-Za-z0-9.\-:[\]]+(\/[A-Za-z0-9._~\-/]*)?$/;

/** This service's URL as clients reach it, or null when it is not a plain http(s) URL. */
export function cleanServerUrl(text) {
  const url = text.trim().replace(/\/+$/, '');
  return SAFE_URL.test(url) ? url : null;
}

function indent(text, spaces) {
  const pad = ' '.repeat(spaces);
  return text.split('\n').map((line) => pad + line).join('\n');
}

/**
 * account: the acme-dns JSON (username, password, fulldomain, subdomain, allowfrom) plus
 * the admin fields (mode, domain). Answers [{id, title, text, notes}].
 */
export function clientConfigs(account, serverUrl) {
  const server = serverUrl;
  const domain = account.domain || 'example.com';
  const acmeDns = {
    username: account.username,
    password: account.password,
    fulldomain: account.fulldomain,
    subdomain: account.subdomain,
    allowfrom: account.allowfrom || [],
  };
  // cert-manager's acmeDNS secret (and our certbot hooks' credentials file): keyed by the
  // bare domain; the same account serves example.com and *.example.com.
  const certManagerJson = JSON.stringify({ [domain]: acmeDns }, null, 2);
  const legoJson = JSON.stringify({
    [domain]: {
      fulldomain: account.fulldomain, subdomain: account.subdomain,
      username: account.username, password: account.password, server_url: server,
    },
  }, null, 2);
  const names = `-d ${domain} -d '*.${domain}'`;
  const configs = [];

  configs.push({
    id: 'cert-manager',
    title: 'cert-manager (Secret and ClusterIssuer)',
    notes: ['kubectl apply -f this file. Add more domains to the same JSON object.'],
    text: [
      'apiVersion: v1',
      'kind: Secret',
      'metadata:',
      '  name: acme-delegate-account',
      '  namespace: cert-manager',
      'type: Opaque',
      'stringData:',
      '  acmedns.json: |',
      indent(certManagerJson, 4),
      '---',
      'apiVersion: cert-manager.io/v1',
      'kind: ClusterIssuer',
      'metadata:',
      '  name: letsencrypt',
      'spec:',
      '  acme:',
      '    server: https://acme-v02.api.letsencrypt.org/directory',
      '    email: you@example.com',
      '    privateKeySecretRef:',
      '      name: letsencrypt-account-key',
      '    solvers:',
      '      - dns01:',
      '          acmeDNS:',
      `            host: ${server}`,
      '            accountSecretRef:',
      '              name: acme-delegate-account',
      '              key: acmedns.json',
    ].join('\n'),
  });

  configs.push({
    id: 'lego',
    title: 'lego v5 and Traefik (acme-dns provider)',
    notes: [
      'lego v5 takes its flags after "run" and calls the provider acmedns; lego v4 (and so '
      + 'Traefik) writes them before "run" and calls it acme-dns. Traefik: '
      + 'certificatesResolvers.le.acme.dnsChallenge.provider=acme-dns with the same two '
      + 'environment variables.',
    ],
    text: [
      "umask 077; cat > lego-acme-dns.json <<'EOF'",
      legoJson,
      'EOF',
      `ACME_DNS_API_BASE=${server} \\`,
      'ACME_DNS_STORAGE_PATH=$PWD/lego-acme-dns.json \\',
      `lego run --accept-tos --email you@example.com --dns acmedns ${names}`,
      '',
      '# lego v4, and Traefik\'s environment:',
      `ACME_DNS_API_BASE=${server} \\`,
      'ACME_DNS_STORAGE_PATH=$PWD/lego-acme-dns.json \\',
      `lego --accept-tos --email you@example.com --dns acme-dns ${names} run`,
    ].join('\n'),
  });

  configs.push({
    id: 'lego-httpreq',
    title: 'lego (httpreq provider)',
    notes: ['Basic auth with the username and key; the fqdn must be the bound name. Keep '
      + "lego's CNAME support on for a delegated name (or use HTTPREQ_MODE=RAW)."],
    text: [
      `export HTTPREQ_ENDPOINT=${server}`,
      `export HTTPREQ_USERNAME=${account.username} HTTPREQ_PASSWORD=${account.password}`,
      `lego run --accept-tos --email you@example.com --dns httpreq -d ${domain}`,
      '# lego v4:',
      `lego --accept-tos --email you@example.com --dns httpreq -d ${domain} run`,
    ].join('\n'),
  });

  const credentials = '/etc/letsencrypt/acme-delegate.json';
  configs.push({
    id: 'certbot',
    title: 'certbot (acme-delegate hooks)',
    notes: ['The credentials file is the cert-manager JSON, mode 600.'],
    text: [
      `umask 077; cat > ${credentials} <<'EOF'`,
      certManagerJson,
      'EOF',
      'certbot certonly --agree-tos --email you@example.com --manual --preferred-challenges dns \\',
      `  ${names} \\`,
      `  --manual-auth-hook "acme-delegate hook certbot-auth --server ${server} --credentials ${credentials}" \\`,
      `  --manual-cleanup-hook "acme-delegate hook certbot-cleanup --server ${server} --credentials ${credentials}"`,
    ].join('\n'),
  });

  configs.push({
    id: 'acme-sh',
    title: 'acme.sh',
    notes: ['acme.sh holds one account per certificate: for several different names use one '
      + 'delegated credential with more values per name and a CNAME per name.'],
    text: [
      `export ACMEDNS_BASE_URL=${server}`,
      `export ACMEDNS_USERNAME=${account.username} ACMEDNS_PASSWORD=${account.password} ACMEDNS_SUBDOMAIN=${account.subdomain}`,
      `acme.sh --issue --dns dns_acmedns ${names}`,
    ].join('\n'),
  });

  configs.push({
    id: 'caddy',
    title: 'Caddy (caddy-dns/acmedns)',
    notes: [],
    text: [
      `${domain} {`,
      '    tls {',
      '        dns acmedns {',
      `            username ${account.username}`,
      `            password ${account.password}`,
      `            subdomain ${account.subdomain}`,
      `            server_url ${server}`,
      '        }',
      '    }',
      '}',
    ].join('\n'),
  });

  configs.push({
    id: 'acme-dns-json',
    title: 'acme-dns account JSON',
    notes: ['What /register answers, for any other acme-dns client.'],
    text: JSON.stringify(acmeDns, null, 2),
  });
  return configs;
}

/** The record the domain's owner creates where the domain is hosted (delegated names). */
export function cnameRecord(account) {
  const domain = account.domain || 'example.com';
  return `_acme-challenge.${domain}. CNAME ${account.fulldomain}.`;
}
