// Credential host bindings, as far as the UI needs them: the host a provider's base_url
// connects to, and whether a credential's patterns allow it.
//
// The router's services/common/host_patterns.py is the authority: it validates patterns (the
// vault stores only its canonical texts, which are all this file ever parses) and decides, per
// call, on the origin it actually connects to. This is a small copy of its matching rule for
// display only (a warning on a provider card), never a security decision: an exact host or
// `*.suffix` (any deeper subdomain, never the suffix itself), optionally `:port`; without a
// port a pattern stands for https on 443 only (never plain http, where the value would travel
// in clear).

/**
 * The origin a base_url connects to: the browser's URL parser gives the host lower-case and
 * IDNA-encoded (IPv6 in brackets, compressed), as the patterns are stored.
 * @returns {{host: string, port: number, defaultPort: number, text: string} | null} `text` is
 *   the pattern that names this origin: host[:port], the port omitted only for https on 443
 *   (a port-less pattern never matches plain http).
 */
export function originOf(baseUrl) {
  let url;
  try {
    url = new URL(baseUrl);
  } catch {
    return null;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return null;
  const defaultPort = url.protocol === "https:" ? 443 : 80;
  const host = url.hostname.replace(/\.$/, "");
  const port = url.port ? Number(url.port) : defaultPort;
  const text = url.protocol === "https:" && port === 443 ? host : `${host}:${port}`;
  return { host, port, defaultPort, text, https: url.protocol === "https:" };
}

/** A canonical pattern's parts: {host, wildcard, port|null}. */
function parsePattern(pattern) {
  let rest = pattern;
  const wildcard = rest.startsWith("*.");
  if (wildcard) rest = rest.slice(2);
  let host = rest;
  let port = null;
  const at = rest.startsWith("[") ? rest.indexOf("]") + 1 : 0;
  const colon = rest.indexOf(":", at);
  if (colon >= 0) {
    host = rest.slice(0, colon);
    port = Number(rest.slice(colon + 1));
  }
  return { host, wildcard, port };
}

/**
 * Whether a credential bound to `patterns` may be sent to `baseUrl` (empty: any host).
 * An unparsable base_url is reported as not allowed (the router would not call it either).
 */
export function hostAllowed(patterns, baseUrl) {
  if (!patterns || patterns.length === 0) return true;
  const origin = originOf(baseUrl);
  if (!origin) return false;
  return patterns.some((text) => {
    const pattern = parsePattern(text);
    const portless = origin.https ? 443 : -1;
    if ((pattern.port ?? portless) !== origin.port) return false;
    return pattern.wildcard ? origin.host.endsWith(`.${pattern.host}`)
      : origin.host === pattern.host;
  });
}
