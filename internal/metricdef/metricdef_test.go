package metricdef

import (
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The accessors return copies: a caller cannot change the table.
func TestAccessorsReturnCopies(t *testing.T) {
	if got := ResultLabels(); !slices.Equal(got, []string{"success", "error", "retry", "dead_letter"}) {
		t.Fatalf("ResultLabels() = %v", got)
	}
	names := Names()
	names[0] = "changed"
	if Names()[0] == "changed" {
		t.Fatal("Names returns the table itself")
	}
	defs := Defs()
	defs[1].Values["result"][0] = "changed"
	if Defs()[1].Values["result"][0] == "changed" || ResultLabels()[0] != "success" {
		t.Fatal("Defs shares its label values with the table")
	}
	reasons := ForwardErrorReasons()
	reasons[0] = "changed"
	if ForwardErrorReasons()[0] != ReasonTooLarge {
		t.Fatal("ForwardErrorReasons returns the list itself")
	}
	for r := range NumResults {
		if Result(r).Label() != ResultLabels()[r] {
			t.Fatalf("Result(%d).Label() = %q", r, Result(r).Label())
		}
	}
}

// Lookup finds every name of the table, with its definition.
func TestLookup(t *testing.T) {
	for _, d := range Defs() {
		if got := Lookup(d.Name); got.Name != d.Name || got.Kind != d.Kind || got.Help != d.Help {
			t.Errorf("Lookup(%q) = %+v", d.Name, got)
		}
	}
}

// The producer's table: copies, and Lookup finds it too.
func TestProducerTable(t *testing.T) {
	defs := ProducerDefs()
	if len(defs) != len(ProducerNames()) || len(defs) == 0 {
		t.Fatalf("ProducerDefs %v, ProducerNames %v", defs, ProducerNames())
	}
	defs[1].Values["reason"][0] = "changed"
	if ProducerDefs()[1].Values["reason"][0] == "changed" || ProducerErrorReasons()[0] == "changed" {
		t.Fatal("ProducerDefs shares its label values with the table")
	}
	for _, d := range ProducerDefs() {
		if got := Lookup(d.Name); got.Name != d.Name || got.Kind != d.Kind {
			t.Errorf("Lookup(%q) = %+v", d.Name, got)
		}
	}
	if !slices.Contains(ProducerErrorReasons(), ReasonClosed) {
		t.Error("closed is not a reason of the producer's errors")
	}
}
