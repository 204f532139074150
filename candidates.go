package bokbok

import "errors"

// MaxUserKeys is how many keys a secure server tries for one user: a user
// may have this many valid keys at once, for a key rotation (the old key
// and the new). See Server.UserKeys.
const MaxUserKeys = 2

// candidateKeys returns the keys a secure server tries for user, always
// MaxUserKeys of them: the user's own keys (at most MaxUserKeys; any more
// are not tried), then a dummy key for each slot left, and which slots
// hold real keys. A dummy key is derived for every slot, used or not, so
// the work does not depend on how many keys the user has.
func candidateKeys(secret *Key, user string, own []Key) (keys [MaxUserKeys]Key, real [MaxUserKeys]bool) {
	for i := range keys {
		keys[i] = dummyKey(secret, user, i)
		if i < len(own) {
			keys[i], real[i] = own[i], true
		}
	}
	return keys, real
}

// errNoCandidate is the failure of message 1 under every candidate key.
var errNoCandidate = errors.New("noise: no candidate key opens message 1")

// readMessage1Candidates reads message 1 as the responder under each
// candidate key in turn, each on a fresh copy of s as it was before
// message 1, and always tries them all. s becomes the state of the first
// real key that opened the message; if none did, it is left as it was
// and the error is errNoCandidate (or the message's own fault, if it is
// one that fails under any key).
func (s *noiseState) readMessage1Candidates(keys *[MaxUserKeys]Key, real [MaxUserKeys]bool, msg []byte) ([]byte, error) {
	var (
		found   bool
		payload []byte
		lastErr error = errNoCandidate
	)
	base := *s
	defer base.wipe()
	for i := range keys {
		try := base
		p, err := try.readMessage1(&keys[i], msg)
		switch {
		case err != nil:
			if !errors.Is(err, errNoiseDecrypt) {
				lastErr = err
			}
		case real[i] && !found:
			found, payload = true, p
			*s = try
		}
		try.wipe()
	}
	if !found {
		return nil, lastErr
	}
	return payload, nil
}
