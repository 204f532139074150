package ocap

import (
	"strings"

	"github.com/bokbok-go/bokbok"
)

// UserKeys is UserKey for bokbok.Server.UserKeys, for servers whose own
// users may have two keys during a rotation (such as a bokbok.KeysFile's
// users): it knows the users of connections opened to enliven this node's
// sturdyrefs and asks next about every other user; nil next refuses them.
func (n *Node) UserKeys(next func(user string) []bokbok.Key) func(user string) []bokbok.Key {
	sturdy := n.UserKey(nil)
	return func(user string) []bokbok.Key {
		if strings.HasPrefix(user, sturdyUserPrefix) {
			if k, ok := sturdy(user); ok {
				return []bokbok.Key{k}
			}
			return nil
		}
		if next == nil {
			return nil
		}
		return next(user)
	}
}
