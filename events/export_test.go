package events

// Stored returns the size g stored last, or false if the object is not
// known to hold what g stored: for the tests to see g's state.
func (g *GrowingObject) Stored() (int64, bool) {
	if !g.known || g.cur == nil {
		return 0, false
	}
	return int64(g.cur.info.Size), true
}
