// A relying party written with Node's openid-client (v6, by panva: the certified RP library),
// driven line by line by tests/test_oidc_node.py, which plays the browser in between.
//
// stdin, one JSON document a line:
//   1. the settings: {issuer, client_id, redirect_uri, scope, auth: "private_key_jwt" |
//      "client_secret_basic", key (a private JWK, for private_key_jwt), alg ("ES256" | "RS256"),
//      secret, clock_skew (seconds the provider's clock is ahead of this one)}
//   2. then commands, each answered by one JSON line on stdout:
//      {"op": "authorize", "scope"?}   -> {url}: the authorization URL (PKCE S256, state, nonce)
//      {"op": "callback", "url"}       -> {ok: true, id_token_header, claims, userinfo, token} or
//                                         {ok: false, name, code, error, status, message, cause}
// The state, nonce and code verifier of the last "authorize" are kept here, as a web app keeps
// them in its session. Nothing is checked by hand: openid-client checks the authorization
// response (state, iss), the ID token (ES256 signature from the JWKS, iss, aud, nonce, exp) and
// the userinfo sub.
import * as client from 'openid-client';
import { createInterface } from 'node:readline';

const ALGORITHMS = {
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
  RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
};

function reply(document) {
  process.stdout.write(JSON.stringify(document) + '\n');
}

function describe(err) {
  // openid-client's error classes: ClientError (code OAUTH_…), ResponseBodyError (the
  // provider's OAuth error: error, status), AuthorizationResponseError (error in the redirect).
  return {
    ok: false, name: err?.constructor?.name ?? typeof err, code: err?.code ?? null, error: err?.error ?? null,
    status: err?.status ?? null, message: String(err?.message ?? err),
    cause: err?.cause instanceof Error ? String(err.cause.message) : null,
  };
}

async function configure(settings) {
  let auth;
  if (settings.auth === 'private_key_jwt') {
    // as docs/oidc.md shows it: the private JWK (its kid the registered key's) through WebCrypto
    const key = await crypto.subtle.importKey('jwk', settings.key, ALGORITHMS[settings.alg], false, ['sign']);
    auth = client.PrivateKeyJwt({ key, kid: settings.key.kid });
  } else {
    auth = client.ClientSecretBasic(settings.secret);
  }
  const metadata = {
    redirect_uris: [settings.redirect_uri],
    id_token_signed_response_alg: 'ES256',
    [client.clockSkew]: settings.clock_skew ?? 0,
  };
  // http on loopback: allowInsecureRequests is for this test only (an https issuer needs none).
  return client.discovery(new URL(settings.issuer), settings.client_id, metadata, auth,
    { execute: [client.allowInsecureRequests], timeout: 20 });
}

async function authorize(config, settings, command) {
  const session = {
    verifier: client.randomPKCECodeVerifier(), state: client.randomState(), nonce: client.randomNonce(),
  };
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: settings.redirect_uri, scope: command.scope ?? settings.scope,
    code_challenge: await client.calculatePKCECodeChallenge(session.verifier), code_challenge_method: 'S256',
    state: session.state, nonce: session.nonce,
  });
  return { session, answer: { url: url.href } };
}

async function callback(config, session, command) {
  const tokens = await client.authorizationCodeGrant(config, new URL(command.url), {
    pkceCodeVerifier: session.verifier, expectedState: session.state, expectedNonce: session.nonce,
  });
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  const header = JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url').toString('utf8'));
  return {
    ok: true, id_token_header: header, claims, userinfo,
    token: { token_type: tokens.token_type, expires_in: tokens.expiresIn() ?? null, scope: tokens.scope ?? null },
  };
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
let settings;
let config;
let session;
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  try {
    if (settings === undefined) {
      settings = command;
      config = await configure(settings);
      reply({ ok: true, issuer: config.serverMetadata().issuer });
    } else if (command.op === 'authorize') {
      const made = await authorize(config, settings, command);
      session = made.session;
      reply(made.answer);
    } else if (command.op === 'callback') {
      reply(await callback(config, session, command));
    } else {
      reply({ ok: false, name: 'UsageError', message: `unknown op ${command.op}` });
    }
  } catch (err) {
    reply(describe(err));
  }
}
