// node-vault, the Node.js Vault client, against sigil's Vault-compatible
// HTTP API. Run by tests/it/http/node_vault.rs with the modules
// scripts/test.sh installs (tests/node/package-lock.json). Every step runs
// whatever happens before it and is reported, as JSON on stdout, with what
// node-vault returned or the status and message of the error it raised.
'use strict';

const fs = require('fs');

function arg(name) {
    const i = process.argv.indexOf(name);
    if (i < 0 || i + 1 >= process.argv.length) throw new Error(`${name} is required`);
    return process.argv[i + 1];
}

async function outcome(step) {
    try {
        return { ok: await step() };
    } catch (e) {
        return { status: e.response ? e.response.statusCode : null, message: e.message };
    }
}

async function main() {
    const addr = arg('--addr');
    const ca = fs.readFileSync(arg('--ca'));
    const jwt = fs.readFileSync(arg('--jwt-file'), 'ascii').trim();
    const client = (extra) =>
        require('node-vault')({ apiVersion: 'v1', endpoint: addr, requestOptions: { ca }, ...extra });
    const out = { 'node-vault': require('node-vault/package.json').version };

    const anonymous = client({});
    out.health = await outcome(() => anonymous.health());
    out.status = await outcome(() => anonymous.status());
    out.initialized = await outcome(() => anonymous.initialized());

    const vault = client({});
    // jwtLogin keeps the issued token for the calls after it.
    const login = await outcome(() => vault.jwtLogin({ role: 'deploy', jwt }));
    out.login = login.ok
        ? { policies: login.ok.auth.policies, renewable: login.ok.auth.renewable, has_token: vault.token.length > 0 }
        : login;
    out.read = await outcome(async () => (await vault.read('secret/data/ci/app/db')).data);
    out.read_v1 = await outcome(async () => (await vault.read('secret/data/ci/app/db?version=1')).data.data);
    out.read_forbidden = await outcome(() => vault.read('secret/data/ci/other/db'));
    out.read_missing = await outcome(() => vault.read('secret/data/ci/app/none'));
    // Lists: the LIST method, and GET with ?list=1 (noCustomHTTPVerbs, for
    // proxies that refuse other methods).
    out.list = await outcome(async () => (await vault.list('secret/metadata/ci/app')).data.keys);
    const plain = client({ token: vault.token, noCustomHTTPVerbs: true });
    out.list_get = await outcome(async () => (await plain.list('secret/metadata/ci/')).data.keys);
    out.list_hidden = await outcome(() => plain.list('secret/metadata/ci/other'));
    out.lookup_self = await outcome(async () => {
        const d = (await vault.tokenLookupSelf()).data;
        return { policies: d.policies, ttl: d.ttl };
    });
    out.revoke_self = await outcome(async () => {
        await vault.tokenRevokeSelf();
        return 'revoked';
    });
    out.read_after_revoke = await outcome(() => vault.read('secret/data/ci/app/db'));
    process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
    process.stderr.write(`${e.stack || e}\n`);
    process.exit(1);
});
