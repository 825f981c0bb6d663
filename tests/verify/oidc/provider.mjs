// A certified OpenID provider (oidc-provider, https://openid.net/certification/) run offline for
// tests/integration/jwt_auth.rs: it checks authsidecar's JWT client authentication
// (private_key_jwt, client_secret_jwt) at its token endpoint and issues client_credentials tokens.
//
//   OIDC_CLIENTS='[{"client_id": "...", "token_endpoint_auth_method": "private_key_jwt",
//                   "jwks": {"keys": [...]}}, ...]' node provider.mjs
//
// With OIDC_SIGN_IN=<account id> it is also an authorization server for the code flow (used by
// tests/integration/discovery.rs): its interaction pages sign that account in and grant what the
// client asked for, at once, answering with the redirect a person's browser would follow (the
// provider's own cookies carry the interaction). Its clients then take their own grant_types,
// response_types and redirect_uris; a "native" client's loopback redirect URI matches any port
// (RFC 8252 §7.3). Accounts have the claims sub and email (<id>@example.org).
//
// Listens on 127.0.0.1 port 0 and prints, one line each:
//   LISTENING <port>                  once, when ready (issuer http://127.0.0.1:<port>)
//   ISSUED <client_id> <access token> for every client_credentials token it issues
//   ERROR <client_id> <error> <description> for every refused token request
// Exits when stdin closes (the test ends).
import http from 'node:http';

import Provider from 'oidc-provider';

const clients = JSON.parse(process.env.OIDC_CLIENTS || '[]').map((c) => ({
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  ...c,
}));


const signIn = process.env.OIDC_SIGN_IN;

// The interaction pages of OIDC_SIGN_IN: log in as that account, then consent to what is missing.
async function interaction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: signIn } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients,
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
    },
    // Offline and in memory: the default adapter, a fixed cookie key.
    cookies: { keys: ['authsidecar-verify-only'] },
    ...(signIn ? {
      findAccount: async (ctx, id) => ({
        accountId: id,
        claims: async () => ({ sub: id, email: `${id}@example.org` }),
      }),
      claims: { openid: ['sub'], email: ['email'] },
    } : {}),
  });
  provider.on('client_credentials.saved', (token) => {
    console.log(`ISSUED ${token.clientId} ${token.jti}`);
  });
  provider.on('grant.error', (ctx, err) => {
    const id = ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id ?? '-';
    console.log(`ERROR ${id} ${err.error} ${err.error_description ?? ''} ${err.error_detail ?? ''}`);
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (signIn && req.method === 'GET' && req.url.startsWith('/interaction/')) {
      interaction(provider, req, res).catch((err) => {
        console.log(`ERROR interaction ${err.name} ${err.message}`);
        res.statusCode = 500;
        res.end();
      });
      return;
    }
    callback(req, res);
  });
  console.log(`LISTENING ${port}`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
