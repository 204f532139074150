package pipes

import (
	"testing"

	"github.com/bokbok-go/bokbok"
)

// FuzzEncryptedPackets feeds a node's handling of an encrypted pipeline's
// packets (hellos, key packets, sealed packets, as any member, or the
// hub, could put them) with arbitrary data: nothing may panic, and only
// packets already delivered are given to the application.
func FuzzEncryptedPackets(f *testing.F) {
	key, _ := bokbok.GenerateKey()
	node, err := OpenNode(NodeConfig{Dir: f.TempDir(), Hub: "127.0.0.1:1", User: "fuzz", Key: key, NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { node.Close() })
	p, err := node.Pipeline("E", &PipelineOptions{Persistent: true, Encrypted: true, Members: []string{"other"}})
	if err != nil {
		f.Fatal(err)
	}
	p.members = []string{"fuzz", "other"}
	k := newPipelineKey()
	peerPub, peerPriv := [32]byte{}, [32]byte{}
	peerPriv[0] = 1
	f.Add([]byte(nil))
	f.Add([]byte{packetHello})
	f.Add(append([]byte{packetHello}, make([]byte, 32)...))
	f.Add(seal(k, []byte("hello")))
	f.Add(sealKey(k, &peerPub, &peerPriv, []memberKey{{Key: node.PublicKey()}}))
	f.Add([]byte{packetKey, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(append([]byte{packetKey}, make([]byte, 50)...))
	seq := uint64(0)
	f.Fuzz(func(t *testing.T, data []byte) {
		seq++
		sp := storedPacket{Seq: seq, Sender: "other", Node: make([]byte, 16), N: seq, Data: data}
		for _, out := range p.openDelivered(sp) {
			if out.Seq > seq {
				t.Fatalf("gave packet %d, beyond the last delivered", out.Seq)
			}
		}
		if len(p.waiting) > 0 {
			p.waiting = p.waiting[:0] // stays in memory only: nothing to flush
		}
	})
}
