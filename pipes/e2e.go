package pipes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/bokbok-go/bokbok"
)

// An encrypted pipeline's packets are sealed by its members with a
// pipeline key the hub never sees. Every member node puts a hello with
// its box key when it first opens the pipeline. The node that makes a
// key (Rotate) puts a key packet sealing it to every member node whose
// hello it has delivered, and later to each new member node whose hello
// it delivers. What a node learns (keys, hellos) is handled as the
// pipeline's packets are delivered to it, so a node shares keys while it
// listens.

// e2eNodeKeys returns the node's box key pair.
func (n *Node) e2eNodeKeys() (pub, priv *[32]byte) { return &n.boxPub, &n.boxPriv }

// PublicKey returns the node's box public key, which members of its
// encrypted pipelines seal their keys to. Comparing it out of band with
// what NodeConfig.TrustKey is given protects against a hub that forges
// hellos.
func (n *Node) PublicKey() [32]byte { return n.boxPub }

// loadE2E reads an encrypted pipeline's keys and hellos from the store.
func (p *Pipeline) loadE2E() error {
	st, err := p.n.store.e2e(p.name)
	if err != nil {
		return err
	}
	p.e2e = st
	p.sealedTo = map[[32]byte]bool{}
	return nil
}

// currentKey returns the key a Put seals with.
func (p *Pipeline) currentKey() (pipelineKey, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.e2e.hasCur {
		return pipelineKey{}, false
	}
	return pipelineKey{ID: p.e2e.current, Key: p.e2e.keys[p.e2e.current]}, true
}

// sealPut seals data for Put.
func (p *Pipeline) sealPut(data []byte) ([]byte, error) {
	k, ok := p.currentKey()
	if !ok {
		return nil, fmt.Errorf("%w: %q: this node holds no key of the pipeline yet (Rotate makes one; a member node that holds one shares it when it delivers this node's hello)", ErrNoKey, p.name)
	}
	return seal(k, data), nil
}

// Rotate makes a new key for an encrypted pipeline, seals it to the
// member nodes this node knows of (their hellos delivered here, of users
// who are members now), and puts it on the pipeline: the packets this
// node puts from now on are sealed with it, and so are those of every
// member once they have delivered it. A node removed from the members
// does not get it. The node must have opened the pipeline on the hub in
// this process (bokbok.ErrNotConnected otherwise), to know its members.
func (p *Pipeline) Rotate(ctx context.Context) error {
	if !p.encrypted {
		return fmt.Errorf("%w: %q is not encrypted", ErrKindMismatch, p.name)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	known := p.members != nil
	p.mu.Unlock()
	if !known {
		return fmt.Errorf("pipes: %q: its members are not known yet: %w", p.name, bokbok.ErrNotConnected)
	}
	return p.rotate()
}

func (p *Pipeline) rotate() error {
	k := newPipelineKey()
	pub, priv := p.n.e2eNodeKeys()
	to := p.memberNodes()
	pkt := sealKey(k, pub, priv, to)
	if len(pkt) > p.maxPacketSize() {
		return fmt.Errorf("%w: a key packet for %d nodes is %d bytes", ErrTooLarge, len(to), len(pkt))
	}
	// The key is on disk, current, before the packet giving it goes out.
	if err := p.n.store.saveE2E(p.name, e2eChange{key: &k, mine: true, current: true, curSeq: math.MaxUint64}); err != nil {
		return err
	}
	p.mu.Lock()
	p.e2e.keys[k.ID], p.e2e.mine[k.ID] = k.Key, true
	p.e2e.current, p.e2e.curSeq, p.e2e.hasCur = k.ID, math.MaxUint64, true
	clear(p.sealedTo)
	for _, m := range to {
		p.sealedTo[m.Key] = true
	}
	p.mu.Unlock()
	return p.putRaw(pkt)
}

// memberNodes returns the member nodes to seal a key to: this node, and
// those whose hellos were delivered here, of users who are members now
// and whom NodeConfig.TrustKey trusts.
func (p *Pipeline) memberNodes() []memberKey {
	pub, _ := p.n.e2eNodeKeys()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []memberKey{{User: p.n.cfg.User, Node: p.n.store.id, Key: *pub}}
	for k, user := range p.e2e.peers {
		if k != *pub && p.isMember(user) && p.n.trusts(user, k) {
			out = append(out, memberKey{User: user, Key: k})
		}
	}
	return out
}

// isMember says whether user is a member, as the hub last said; p.mu is
// held.
func (p *Pipeline) isMember(user string) bool {
	_, found := slices.BinarySearch(p.members, user)
	return found
}

func (n *Node) trusts(user string, key [32]byte) bool {
	return n.cfg.TrustKey == nil || n.cfg.TrustKey(user, key)
}

// putRaw puts a packet as it is (a hello or a key packet) in the outbox.
func (p *Pipeline) putRaw(data []byte) error {
	if _, err := p.n.store.put(p.name, data); err != nil {
		return err
	}
	p.n.poke(p.n.outboxPut)
	return nil
}

// e2eOpened runs when the hub opened an encrypted pipeline: it learns its
// members, puts this node's hello the first time, and makes the first
// key if this node's user created the pipeline and it is still empty.
func (p *Pipeline) e2eOpened(r openReply) error {
	p.mu.Lock()
	p.members = slices.Clone(r.Members)
	slices.Sort(p.members)
	hello, hasKey := p.e2e.hello, p.e2e.hasCur
	p.mu.Unlock()
	if !hello {
		pub, _ := p.n.e2eNodeKeys()
		if err := p.putRaw(append([]byte{packetHello}, pub[:]...)); err != nil {
			return err
		}
		if err := p.n.store.saveE2E(p.name, e2eChange{hello: true}); err != nil {
			return err
		}
		p.mu.Lock()
		p.e2e.hello = true
		p.mu.Unlock()
	}
	if !hasKey && r.Last == 0 && r.Owner == p.n.cfg.User {
		return p.rotate()
	}
	return nil
}

// openDelivered opens a delivered packet of an encrypted pipeline and
// returns what to give the listeners: a sealed packet opened; nothing for
// a hello, or for a sealed packet whose key the node has not been given
// yet (it waits, and is given once a key packet brings its key); and,
// for such a key packet, the packets that waited for it. A packet the
// node cannot open is reported to OnError.
func (p *Pipeline) openDelivered(sp storedPacket) []storedPacket {
	if len(sp.Data) == 0 {
		p.reportError(fmt.Errorf("%w: packet %d of %q is empty", ErrNoKey, sp.Seq, p.name))
		return nil
	}
	var (
		out []storedPacket
		err error
	)
	switch sp.Data[0] {
	case packetSealed:
		var data []byte
		if data, err = p.unseal(sp.Data); err == nil {
			sp.Data = data
			return []storedPacket{sp}
		}
		if errors.Is(err, errKeyNotYet) {
			p.wait(sp)
			return nil
		}
	case packetHello:
		err = p.takeHello(sp)
	case packetKey:
		var k *pipelineKey
		if k, err = p.takeKey(sp); k != nil {
			out = p.openWaiting(*k)
		}
	default:
		err = fmt.Errorf("%w: not a packet of an encrypted pipeline", ErrNoKey)
	}
	if err != nil {
		p.reportError(fmt.Errorf("pipes: packet %d of %q from %q: %w", sp.Seq, p.name, sp.Sender, err))
	}
	return out
}

// errKeyNotYet marks a sealed packet whose key the node may still get.
var errKeyNotYet = fmt.Errorf("%w: sealed with a key this node has not been given", ErrNoKey)

func (p *Pipeline) unseal(data []byte) ([]byte, error) {
	id, ok := sealedKeyID(data)
	if !ok {
		return nil, fmt.Errorf("%w: a damaged sealed packet", ErrNoKey)
	}
	p.mu.Lock()
	key, ok := p.e2e.keys[id]
	p.mu.Unlock()
	if !ok {
		return nil, errKeyNotYet
	}
	return unseal(&key, data)
}

// takeHello records a member node's box key and, if this node made the
// current key, shares it with that node.
func (p *Pipeline) takeHello(sp storedPacket) error {
	if len(sp.Data) != 33 {
		return fmt.Errorf("%w: a damaged hello", ErrNoKey)
	}
	m := memberKey{User: sp.Sender, Key: [32]byte(sp.Data[1:])}
	copy(m.Node[:], sp.Node)
	pub, _ := p.n.e2eNodeKeys()
	if m.Key == *pub {
		return nil
	}
	p.mu.Lock()
	ok := p.isMember(m.User) && p.n.trusts(m.User, m.Key)
	known := p.e2e.peers[m.Key] == m.User
	p.mu.Unlock()
	if !ok {
		return nil // not (or no longer) a member: nothing to give it
	}
	if !known {
		if err := p.n.store.saveE2E(p.name, e2eChange{peer: &m}); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.e2e.peers[m.Key] = m.User
	share := p.e2e.hasCur && p.e2e.mine[p.e2e.current] && !p.sealedTo[m.Key]
	k := pipelineKey{ID: p.e2e.current, Key: p.e2e.keys[p.e2e.current]}
	if share {
		p.sealedTo[m.Key] = true
	}
	p.mu.Unlock()
	if !share {
		return nil
	}
	_, priv := p.n.e2eNodeKeys()
	return p.putRaw(sealKey(k, pub, priv, []memberKey{m}))
}

// takeKey opens a key packet sealed to this node by a member node whose
// hello it delivered (or by itself); the newest such key becomes the one
// Put seals with.
func (p *Pipeline) takeKey(sp storedPacket) (*pipelineKey, error) {
	pub, priv := p.n.e2eNodeKeys()
	kp, err := parseKeyPacket(sp.Data, pub)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if kp.ID == p.e2e.current {
		for _, to := range kp.To {
			p.sealedTo[to] = true
		}
	}
	from := p.e2e.peers[kp.From]
	p.mu.Unlock()
	if kp.env == nil {
		return nil, nil // not for this node
	}
	if kp.From != *pub && (from != sp.Sender || !p.n.trusts(from, kp.From)) {
		return nil, fmt.Errorf("%w: a key packet from a box key the node has no hello of", ErrNoKey)
	}
	k, err := kp.open(priv)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	_, had := p.e2e.keys[k.ID]
	newer := !p.e2e.hasCur || sp.Seq > p.e2e.curSeq || k.ID == p.e2e.current
	p.mu.Unlock()
	if had && !newer {
		return nil, nil
	}
	if err := p.n.store.saveE2E(p.name, e2eChange{key: &k, mine: kp.From == *pub, current: newer, curSeq: sp.Seq}); err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.e2e.keys[k.ID] = k.Key
	if newer {
		p.e2e.current, p.e2e.curSeq, p.e2e.hasCur = k.ID, sp.Seq, true
	}
	p.mu.Unlock()
	if had {
		return nil, nil
	}
	return &k, nil
}

// MaxWaiting bounds the packets of an encrypted pipeline that a node
// keeps while it waits for their key; the oldest go first.
const MaxWaiting = 1 << 16

// wait keeps a sealed packet until its key comes: in memory until the
// batch is done, then in the store (see flushWaiting).
func (p *Pipeline) wait(sp storedPacket) {
	p.waiting = append(p.waiting, sp)
}

// flushWaiting stores the packets of the batch that wait for their key,
// in the next group commit, before the cursor passes them. Only the
// deliverer calls it.
func (p *Pipeline) flushWaiting() {
	if len(p.waiting) == 0 {
		return
	}
	ps := p.waiting
	p.waiting = nil
	p.n.store.saveWaitingAsync(p.name, ps, MaxWaiting, func(err error) {
		if err != nil && !errors.Is(err, ErrClosed) {
			p.n.log.Error("pipes: keeping the packets that wait for a key failed", "pipeline", p.name, "err", err)
		}
	})
}

// openWaiting returns, opened, the packets that waited for k, and
// forgets them. Only the deliverer calls it.
func (p *Pipeline) openWaiting(k pipelineKey) []storedPacket {
	var out, still []storedPacket
	for _, sp := range p.waiting {
		if id, _ := sealedKeyID(sp.Data); id == k.ID {
			if data, err := unseal(&k.Key, sp.Data); err == nil {
				sp.Data = data
				out = append(out, sp)
				continue
			}
		}
		still = append(still, sp)
	}
	p.waiting = still
	stored, err := p.n.store.takeWaiting(p.name, k)
	if err != nil {
		p.reportError(err)
	}
	out = append(stored, out...)
	slices.SortFunc(out, func(a, b storedPacket) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// SetMembers replaces the members of a private pipeline; only its owner
// may. On an encrypted pipeline, removing a member also rotates its key
// (see Rotate), so that what is put from now on is sealed to the
// remaining members only. The node must be connected.
func (p *Pipeline) SetMembers(ctx context.Context, members []string) error {
	s, err := p.openedSession()
	if err != nil {
		return err
	}
	var reply openReply
	if err := s.conn.Invoke(ctx, methodMembers, membersRequest{Pipeline: p.name, Members: members}, &reply); err != nil {
		return hubError(err)
	}
	p.mu.Lock()
	old := p.members
	p.members = slices.Clone(reply.Members)
	slices.Sort(p.members)
	removed := false
	for _, m := range old {
		if !p.isMember(m) {
			removed = true
		}
	}
	p.mu.Unlock()
	if p.encrypted && removed {
		return p.rotate()
	}
	return nil
}

// Members returns the members of a private pipeline, as the hub last
// said; none for an open one or before the hub opened it.
func (p *Pipeline) Members() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.members)
}

// Encrypted reports whether the pipeline is end-to-end encrypted.
func (p *Pipeline) Encrypted() bool { return p.encrypted }

// searchLocal searches the node's copy of an encrypted pipeline.
func (p *Pipeline) searchLocal(query string, max int) (SearchPage, error) {
	res, truncated, err := p.n.store.searchCopy(p.name, query, max)
	if err != nil {
		return SearchPage{}, err
	}
	for i := range res {
		res[i].Own = res[i].ID.Node == p.n.store.id
	}
	return SearchPage{Results: res, Truncated: truncated}, nil
}
