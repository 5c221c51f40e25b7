// Certificate authorities that sign SVIDs: a built-in CA whose root lives in the agent's state directory, and
// an external issuer whose intermediate comes from files in cert-manager's Secret layout.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { KeyUsageFlags, type Certificate, type CryptoKey, importKeyPem, exportKeyPem, parseCertificatesPem } from './x509.js';
import { checkTrustDomain, trySpiffeId, type SpiffeId } from './spiffe-id.js';
import { createRoot, issueSvid, type IssueOptions, type SigningAuthority, type Svid } from './svid.js';
import { TrustBundle } from './bundle.js';
import { ensurePrivateDir, fileStamp, writePrivateFile } from './files.js';

/** What the rotation needs from any CA. */
export interface CertificateAuthority {
  readonly kind: 'builtin' | 'external';
  readonly trustDomain: string;
  /** Signs a new SVID for `id`; throws when the CA cannot sign (the caller keeps its last good SVID). */
  issue(id: SpiffeId, o?: IssueOptions): Promise<Svid>;
  /** The trust domain's roots as this CA knows them now. */
  bundle(): Promise<TrustBundle>;
}

/** A CA's files are missing, half-written or inconsistent; the message names the file and what is wrong. */
export class CaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CaError';
  }
}

function checkIdInDomain(id: SpiffeId, trustDomain: string): void {
  if (id.trustDomain !== trustDomain) throw new RangeError(`this CA signs for ${trustDomain}, not ${id.trustDomain}`);
}

function trustDomainOf(cert: Certificate): string | undefined {
  for (const uri of cert.uris) {
    const r = trySpiffeId(uri);
    if ('id' in r) return r.id.trustDomain;
  }
  return undefined;
}

/** Does `keyPem` hold the private half of `cert`'s public key? */
function keyMatches(cert: Certificate, keyPem: string): boolean {
  const spki = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
  return cert.spki.equals(spki);
}

function checkSigningCert(cert: Certificate, what: string, now: number): void {
  if (!cert.basicConstraints?.ca) throw new CaError(`${what}: not a CA certificate (basicConstraints CA=true is required)`);
  const ku = cert.keyUsage;
  if (ku !== undefined && !(ku & KeyUsageFlags.keyCertSign)) throw new CaError(`${what}: keyUsage lacks keyCertSign`);
  if (now > cert.notAfter.getTime()) throw new CaError(`${what}: expired at ${cert.notAfter.toISOString()}`);
  if (now < cert.notBefore.getTime()) throw new CaError(`${what}: not valid before ${cert.notBefore.toISOString()}`);
}

interface StoredRoot {
  authority: SigningAuthority;
  /** The latest notAfter of a leaf this root signed (kept on disk: the old root may go only after it). */
  issuedUntil: number;
}

export interface BuiltinCaOptions {
  /** The agent's state directory; the CA keeps its files in `<stateDir>/ca/`. */
  stateDir: string;
  trustDomain: string;
  /** Lifetime of a root created here; default 1 year. */
  rootTtlMs?: number;
  now?: () => number;
}

export type RootRotationPhase = 'none' | 'new-root-in-bundle' | 'issuing-from-new-root';

/**
 * The built-in CA. Its root is created on first start and reused after: `ca/root.crt` and `ca/root.key`
 * (0600). A root rotation adds `next.*` (in the bundle, not signing) then moves the old root to `retired.*`
 * (in the bundle, key deleted) until every leaf it signed has expired.
 */
export class BuiltinCa implements CertificateAuthority {
  readonly kind = 'builtin' as const;
  readonly trustDomain: string;
  readonly dir: string;
  readonly #now: () => number;
  readonly #rootTtlMs: number | undefined;
  #root!: StoredRoot;
  #next: StoredRoot | undefined;
  #retired: { certificate: Certificate; issuedUntil: number } | undefined;

  private constructor(o: BuiltinCaOptions) {
    this.trustDomain = checkTrustDomain(o.trustDomain);
    this.dir = join(o.stateDir, 'ca');
    this.#now = o.now ?? Date.now;
    this.#rootTtlMs = o.rootTtlMs;
  }

  /** Opens the CA in `stateDir`, creating its root on first start. */
  static async open(o: BuiltinCaOptions): Promise<BuiltinCa> {
    const ca = new BuiltinCa(o);
    if (!existsSync(ca.dir)) {
      // The first root is made in a scratch directory renamed into place: two agents starting at once on an
      // empty state directory end up with one root, never a key from one and a certificate from the other.
      mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
      const scratch = join(o.stateDir, `.ca-${process.pid}-${randomBytes(4).toString('hex')}`);
      try {
        ensurePrivateDir(scratch);
        await ca.#create('root', scratch);
        renameSync(scratch, ca.dir);
      } catch (e) {
        rmSync(scratch, { recursive: true, force: true });
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EEXIST' && code !== 'ENOTEMPTY') throw e;
      }
    }
    ensurePrivateDir(ca.dir);
    const root = await ca.#load('root');
    ca.#root = root ?? (await ca.#create('root'));
    ca.#next = await ca.#load('next');
    const retiredCrt = join(ca.dir, 'retired.crt');
    if (existsSync(retiredCrt)) {
      const cert = parseCertificatesPem(readFileSync(retiredCrt, 'utf8'), retiredCrt)[0]!;
      ca.#retired = { certificate: cert, issuedUntil: ca.#readIssuedUntil('retired') };
    }
    return ca;
  }

  #path(name: string, ext: string): string {
    return join(this.dir, `${name}.${ext}`);
  }

  #readIssuedUntil(name: string): number {
    const p = this.#path(name, 'json');
    if (!existsSync(p)) return 0;
    try {
      const v = JSON.parse(readFileSync(p, 'utf8')).issuedUntil;
      if (typeof v !== 'number') throw new Error('issuedUntil is not a number');
      return v;
    } catch (e) {
      throw new CaError(`${p}: ${(e as Error).message}`);
    }
  }

  async #load(name: string): Promise<StoredRoot | undefined> {
    const crt = this.#path(name, 'crt');
    const key = this.#path(name, 'key');
    const has = [existsSync(crt), existsSync(key)];
    if (!has[0] && !has[1]) return undefined;
    if (!has[0] || !has[1]) throw new CaError(`${this.dir}: ${has[0] ? key : crt} is missing (the other half, ${has[0] ? crt : key}, is there); restore it or remove both to create a new root`);
    const cert = parseCertificatesPem(readFileSync(crt, 'utf8'), crt)[0]!;
    const keyPem = readFileSync(key, 'utf8');
    const td = trustDomainOf(cert);
    if (td !== this.trustDomain) throw new CaError(`${crt}: the root is for trust domain ${td ?? '(none)'}, the agent is configured for ${this.trustDomain}`);
    let privateKey: CryptoKey;
    try {
      privateKey = await importKeyPem(keyPem, key);
    } catch (e) {
      throw new CaError((e as Error).message);
    }
    if (!keyMatches(cert, keyPem)) throw new CaError(`${key}: does not match the public key of ${crt}`);
    checkSigningCert(cert, crt, this.#now());
    return { authority: { certificate: cert, privateKey, chain: [] }, issuedUntil: this.#readIssuedUntil(name) };
  }

  async #create(name: string, dir = this.dir): Promise<StoredRoot> {
    const a = await createRoot({ trustDomain: this.trustDomain, now: this.#now(), ...(this.#rootTtlMs ? { ttlMs: this.#rootTtlMs } : {}), name: `mesh root ${this.trustDomain}` });
    // Key first: a crash between the two writes leaves a key with no certificate, which open() reports.
    writePrivateFile(join(dir, `${name}.key`), await exportKeyPem(a.privateKey));
    writePrivateFile(join(dir, `${name}.crt`), a.certificate.toString('pem') + '\n');
    return { authority: a, issuedUntil: 0 };
  }

  get root(): Certificate {
    return this.#root.authority.certificate;
  }

  async issue(id: SpiffeId, o: IssueOptions = {}): Promise<Svid> {
    checkIdInDomain(id, this.trustDomain);
    const svid = await issueSvid(this.#root.authority, id, { now: this.#now(), ...o });
    const until = svid.notAfter.getTime();
    if (until > this.#root.issuedUntil) {
      this.#root.issuedUntil = until;
      writePrivateFile(this.#path('root', 'json'), JSON.stringify({ issuedUntil: until }) + '\n');
    }
    return svid;
  }

  async bundle(): Promise<TrustBundle> {
    const roots = [this.#root.authority.certificate];
    if (this.#next) roots.push(this.#next.authority.certificate);
    if (this.#retired) roots.push(this.#retired.certificate);
    return new TrustBundle(this.trustDomain, roots);
  }

  get rotationPhase(): RootRotationPhase {
    if (this.#next) return 'new-root-in-bundle';
    if (this.#retired) return 'issuing-from-new-root';
    return 'none';
  }

  /** When the retired root may be removed (the last leaf it signed has expired), or undefined. */
  get retiredRootRemovableAt(): number | undefined {
    return this.#retired?.issuedUntil;
  }

  /**
   * Rotation step 1: create the new root and add it to the bundle. It signs nothing yet, so every peer can
   * learn it before the first leaf it signs appears.
   */
  async addNewRoot(): Promise<Certificate> {
    if (this.#next) throw new CaError('root rotation: a new root is already in the bundle; switch to it first');
    if (this.#retired) throw new CaError('root rotation: the previous rotation is not finished (the retired root is still in the bundle)');
    this.#next = await this.#create('next');
    return this.#next.authority.certificate;
  }

  /**
   * Rotation step 2: sign with the new root. The old root stays in the bundle (its key is deleted) until the
   * last leaf it signed expires.
   */
  async switchToNewRoot(): Promise<void> {
    if (!this.#next) throw new CaError('root rotation: no new root in the bundle; add one first');
    const old = this.#root;
    writePrivateFile(this.#path('retired', 'crt'), old.authority.certificate.toString('pem') + '\n');
    writePrivateFile(this.#path('retired', 'json'), JSON.stringify({ issuedUntil: old.issuedUntil }) + '\n');
    writePrivateFile(this.#path('root', 'key'), await exportKeyPem(this.#next.authority.privateKey));
    writePrivateFile(this.#path('root', 'crt'), this.#next.authority.certificate.toString('pem') + '\n');
    writePrivateFile(this.#path('root', 'json'), JSON.stringify({ issuedUntil: this.#next.issuedUntil }) + '\n');
    for (const ext of ['key', 'crt', 'json']) rmSync(this.#path('next', ext), { force: true });
    this.#retired = { certificate: old.authority.certificate, issuedUntil: old.issuedUntil };
    this.#root = this.#next;
    this.#next = undefined;
  }

  /** Rotation step 3: drop the old root, refused while a leaf it signed may still be valid. */
  removeOldRoot(): Certificate {
    if (!this.#retired) throw new CaError('root rotation: there is no retired root to remove');
    const now = this.#now();
    if (now <= this.#retired.issuedUntil) {
      throw new CaError(`root rotation: the old root signed leaves valid until ${new Date(this.#retired.issuedUntil).toISOString()}; remove it after that`);
    }
    const cert = this.#retired.certificate;
    for (const ext of ['crt', 'json']) rmSync(this.#path('retired', ext), { force: true });
    this.#retired = undefined;
    return cert;
  }
}

export interface ExternalCaOptions {
  /** A directory with `tls.crt` (the intermediate, then its chain), `tls.key` and `ca.crt` (the root or roots). */
  dir: string;
  trustDomain: string;
  now?: () => number;
}

/**
 * An issuer whose intermediate certificate and key come from files in cert-manager's Secret layout (a mounted
 * Secret or a directory kept in sync with one). The files are checked for change before every signature and
 * re-read when they changed, so an issuer rotated upstream is used at the next renewal.
 */
export class ExternalCa implements CertificateAuthority {
  readonly kind = 'external' as const;
  readonly trustDomain: string;
  readonly dir: string;
  readonly #now: () => number;
  #stamp: string | undefined;
  #loaded: { authority: SigningAuthority; roots: Certificate[] } | undefined;

  constructor(o: ExternalCaOptions) {
    this.trustDomain = checkTrustDomain(o.trustDomain);
    this.dir = o.dir;
    this.#now = o.now ?? Date.now;
  }

  /** Reads the files (again, if they changed); throws CaError naming the file and the problem. */
  async load(): Promise<{ authority: SigningAuthority; roots: Certificate[] }> {
    const files = ['tls.crt', 'tls.key', 'ca.crt'].map((f) => join(this.dir, f));
    const stamp = files.map(fileStamp).join('|');
    if (this.#loaded && stamp === this.#stamp) return this.#loaded;
    const [crtPath, keyPath, caPath] = files as [string, string, string];
    const read = (p: string): string => {
      try {
        return readFileSync(p, 'utf8');
      } catch (e) {
        throw new CaError(`external CA ${this.dir}: ${p.slice(this.dir.length + 1)}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
    };
    const field = (p: string) => `external CA ${this.dir}: ${p.slice(this.dir.length + 1)}`;
    const parse = (p: string) => {
      try {
        return parseCertificatesPem(read(p), field(p));
      } catch (e) {
        throw e instanceof CaError ? e : new CaError((e as Error).message);
      }
    };
    const chain = parse(crtPath);
    const roots = parse(caPath);
    const keyPem = read(keyPath);
    const [cert, ...rest] = chain as [Certificate, ...Certificate[]];
    checkSigningCert(cert, field(crtPath), this.#now());
    let privateKey: CryptoKey;
    try {
      if (!keyMatches(cert, keyPem)) throw new CaError(`${field(keyPath)}: does not match the public key of tls.crt`);
      privateKey = await importKeyPem(keyPem, field(keyPath));
    } catch (e) {
      throw e instanceof CaError ? e : new CaError(e instanceof Error && e.message.startsWith('external CA') ? e.message : `${field(keyPath)}: not a usable private key`);
    }
    const td = trustDomainOf(cert);
    if (td !== undefined && td !== this.trustDomain) throw new CaError(`${field(crtPath)}: the issuer is for trust domain ${td}, the agent is configured for ${this.trustDomain}`);
    for (const r of roots) {
      if (!r.basicConstraints?.ca) throw new CaError(`${field(caPath)}: ${r.subject} is not a CA certificate`);
    }
    // The issuer must chain to one of the roots, or every SVID it signs would be rejected by peers.
    const intermediates = rest.filter((c) => c.subject !== c.issuer);
    let tip = cert;
    for (const c of intermediates) {
      if (!tip.signedBy(c)) throw new CaError(`${field(crtPath)}: ${tip.subject} is not signed by the next certificate in the file, ${c.subject}`);
      tip = c;
    }
    let anchored = false;
    for (const r of roots) if (r.subject === tip.issuer && tip.signedBy(r)) anchored = true;
    if (!anchored) throw new CaError(`${field(crtPath)}: does not chain to a root in ca.crt (issuer ${tip.issuer})`);
    this.#loaded = { authority: { certificate: cert, privateKey, chain: intermediates }, roots };
    this.#stamp = stamp;
    return this.#loaded;
  }

  async issue(id: SpiffeId, o: IssueOptions = {}): Promise<Svid> {
    checkIdInDomain(id, this.trustDomain);
    const { authority } = await this.load();
    return issueSvid(authority, id, { now: this.#now(), ...o });
  }

  async bundle(): Promise<TrustBundle> {
    return new TrustBundle(this.trustDomain, (await this.load()).roots);
  }
}
