// The one way the UI talks to the gateway: the public REST v2 API, same origin, session cookie.
//
// Success bodies are {"response": ...}; errors {"error": {"code", "message"}} become a thrown
// ApiError carrying the code, the message and the HTTP status. A 401 on any call (the session
// ended or expired) also tells the app, which returns to sign-in with a message.

export const API = "/api/v2";
export const ME = `${API}/users/me`;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }

  /** "code (HTTP status): message", as shown in the alert region. */
  describe() {
    return `${this.code} (HTTP ${this.status}): ${this.message}`;
  }
}

let onUnauthorized = () => {};

/** Register what happens when a call answers 401 (the app shows sign-in). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

async function errorFrom(response) {
  let code = "http_error";
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) {
      code = String(body.error.code || code);
      message = String(body.error.message || message);
    }
  } catch {
    // Not JSON (a proxy's page, say): keep the status line.
  }
  return new ApiError(response.status, code, message);
}

/**
 * Call the API.
 * @param {string} method
 * @param {string} path absolute path, e.g. `${ME}/ai-providers`
 * @param {{body?: *, token?: string, quietUnauthorized?: boolean}} [options] `token` sends
 *   `Authorization: Bearer` instead of relying on the cookie (sign-in only).
 * @returns {Promise<*>} the `response` member of the body
 */
export async function call(method, path, options = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  if (options.token) headers.Authorization = `Bearer ${options.token}`;
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network_error", "the gateway could not be reached");
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && !options.quietUnauthorized) {
      error.handled = true; // the app has returned to sign-in and said why
      onUnauthorized(error);
    }
    throw error;
  }
  const body = await response.json();
  return body.response;
}

export const get = (path, options) => call("GET", path, options);
export const put = (path, body) => call("PUT", path, { body });
export const post = (path, body) => call("POST", path, { body });
export const del = (path) => call("DELETE", path);

/** Path segment for a key or name chosen by the user. */
export const seg = (text) => encodeURIComponent(text);
