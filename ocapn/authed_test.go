package ocapn

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// authedNetlayer is a tcp-testing-only netlayer whose connections say
// they authenticated the designator "bob", as a secure netlayer's do.
type authedNetlayer struct{ *TestingOnlyTCP }

type authedConn struct{ net.Conn }

func (authedConn) PeerDesignator() string { return "bob" }

func (a authedNetlayer) Accept() (net.Conn, error) {
	c, err := a.TestingOnlyTCP.Accept()
	if err != nil {
		return nil, err
	}
	return authedConn{c}, nil
}

// TestAuthenticatedDesignatorMustMatch: on a netlayer that authenticates
// peers, a peer whose op:start-session claims another designator is
// refused; the one it authenticated is served.
func TestAuthenticatedDesignatorMustMatch(t *testing.T) {
	nl, err := ListenTestingOnlyTCP("127.0.0.1:0")
	require.NoError(t, err)
	n := NewNode(Config{})
	t.Cleanup(func() { n.Close() })
	n.AddNetlayer(authedNetlayer{nl})
	registerSuiteObjects(n)

	mallory := dialRaw(t, nl)
	mallory.loc.Designator = "alice"
	mallory.send(mallory.startRecord())
	r := mallory.expect("op:abort")
	assert.Contains(t, r.Fields[0], `authenticated "bob"`)

	bob := dialRaw(t, nl)
	bob.loc.Designator = "bob"
	bob.hello()
	bob.fetch(swissGreeter)
}
