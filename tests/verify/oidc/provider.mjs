// A certified OpenID provider (oidc-provider, https://openid.net/certification/) run offline for
// tests/integration/jwt_auth.rs: it checks authsidecar's JWT client authentication
// (private_key_jwt, client_secret_jwt) at its token endpoint and issues client_credentials tokens.
//
//   OIDC_CLIENTS='[{"client_id": "...", "token_endpoint_auth_method": "private_key_jwt",
//                   "jwks": {"keys": [...]}}, ...]' node provider.mjs
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
  });
  provider.on('client_credentials.saved', (token) => {
    console.log(`ISSUED ${token.clientId} ${token.jti}`);
  });
  provider.on('grant.error', (ctx, err) => {
    const id = ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id ?? '-';
    console.log(`ERROR ${id} ${err.error} ${err.error_description ?? ''} ${err.error_detail ?? ''}`);
  });
  server.on('request', provider.callback());
  console.log(`LISTENING ${port}`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
