// A real OpenID provider (panva's oidc-provider) for the OIDC sign-in tests (tests/it/oidc.rs).
//
//   node provider.mjs TOOLS_DIR     (TOOLS_DIR: where .ci/oidc/setup.sh installed oidc-provider)
//
// It listens on 127.0.0.1 on a free port first and prints `issuer http://127.0.0.1:PORT`, then
// reads one JSON line on stdin -- the client and the accounts, known only once the server under
// test is up:
//   {"clientId": "...", "clientSecret": "...", "redirectUri": "...",
//    "accounts": {"alice": {"email": "alice@acme.test", "email_verified": true}, ...}}
// and prints `ready`. Sign-in is the development login form (any password; the login is the
// account id); consent is granted without asking, as a company's own app would be.
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';

// The script lives in the repository, the package in the tools directory.
const tools = path.resolve(process.argv[2] ?? '.');
const entry = createRequire(path.join(tools, 'package.json')).resolve('oidc-provider');
const { default: Provider } = await import(pathToFileURL(entry).href);

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;
console.log(`issuer ${issuer}`);

const lines = readline.createInterface({ input: process.stdin });
const first = await new Promise((resolve) => lines.once('line', resolve));
const setup = JSON.parse(first);

const provider = new Provider(issuer, {
  clients: [{
    client_id: setup.clientId,
    client_secret: setup.clientSecret,
    redirect_uris: [setup.redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  // PKCE is required of every client (S256 only, the provider's default method).
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  // Claims asked for by scope go into the ID token, as most providers do; an account with
  // `userinfoOnly` leaves them out (scope without the email claim) so the server must ask userinfo.
  conformIdTokenClaims: setup.conformIdTokenClaims ?? false,
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['parallax-oidc-test-cookie-key'] },
  async findAccount(ctx, id) {
    const account = setup.accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
  // First-party app: the grant is made without a consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email');
    grant.addOIDCClaims(['email', 'email_verified']);
    await grant.save();
    return grant;
  },
});
// Plain http on loopback is fine for a test provider.
provider.proxy = false;

server.on('request', provider.callback());
console.log('ready');

// Ends with its parent (the test): stdin closes when the test process drops the child.
lines.on('close', () => process.exit(0));
