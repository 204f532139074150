package main

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Msg is the echo RPC's request and reply: every system sends one and
// expects the same Seq and Data back.
type Msg struct {
	Seq  int64  `msgpack:"seq"`
	Data []byte `msgpack:"data"`
}

// A system is one RPC implementation under test.
type system interface {
	name() string
	// start starts an echo server on 127.0.0.1 and returns its address
	// and a function that stops it, closing its listener and every
	// connection it accepted, and waits for its goroutines.
	start() (addr string, stop func(), err error)
	// dial opens one client connection to addr.
	dial(ctx context.Context, addr string) (client, error)
}

// A client is one connection, usable from many goroutines at once.
type client interface {
	// call sends req and returns the reply. req (and req.Data) must not
	// be modified until call returns.
	call(ctx context.Context, req *Msg) (*Msg, error)
	close() error
}

// allSystems returns every system, in the order the table lists them.
func allSystems() ([]system, error) {
	bok, err := newBokbokSystem(false)
	if err != nil {
		return nil, err
	}
	bokSecure, err := newBokbokSystem(true)
	if err != nil {
		return nil, err
	}
	rcvbuf := &bokbokSystem{rcvbuf: 256 << 10}
	systems := []system{rawSystem{}, rawSecretboxSystem{}, netrpcSystem{}, grpcSystem{}, bok, bokSecure, newBokbokMsgpSystem(), newBokbokBulkSystem(), rcvbuf}
	for _, v := range []struct{ secure, bare bool }{{false, false}, {false, true}, {true, false}} {
		mux, err := newBokbokMuxSystem(v.secure, v.bare)
		if err != nil {
			return nil, err
		}
		systems = append(systems, mux)
	}
	return systems, nil
}

// The trivial binary layout of a Msg used by raw, raw-secretbox and grpc:
// Seq as 8 big-endian bytes, then Data (its length is the rest).
const seqSize = 8

// appendMsg appends m's binary layout to b.
func appendMsg(b []byte, m *Msg) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(m.Seq))
	return append(b, m.Data...)
}

// parseMsg decodes b into m, copying Data out of b.
func parseMsg(b []byte, m *Msg) error {
	if len(b) < seqSize {
		return fmt.Errorf("message of %d bytes, want at least %d", len(b), seqSize)
	}
	m.Seq = int64(binary.BigEndian.Uint64(b))
	m.Data = append([]byte(nil), b[seqSize:]...)
	return nil
}
