package engine

import (
	"reflect"
	"testing"
	"unsafe"
)

// TestRecycleClearsEveryField sets every field of a task, nested ones
// included, to something not zero, recycles it, and checks that it equals a
// fresh task but for what recycle keeps (part, out, msg.Topic): a field
// added to task and forgotten in recycle would leak one message's state
// into the next message's delivery.
func TestRecycleClearsEveryField(t *testing.T) {
	var tk task
	fillNonZero(t, reflect.ValueOf(&tk).Elem(), "task")
	want := task{part: tk.part, out: tk.out}
	want.msg.Topic = tk.msg.Topic
	tk.recycle()
	got, exp := reflect.ValueOf(&tk).Elem(), reflect.ValueOf(&want).Elem()
	for i := range got.NumField() {
		name := got.Type().Field(i).Name
		if !reflect.DeepEqual(exported(got.Field(i)).Interface(), exported(exp.Field(i)).Interface()) {
			t.Errorf("recycle left task.%s set: %+v", name, exported(got.Field(i)).Interface())
		}
	}
}

// exported returns v, settable and readable though unexported.
func exported(v reflect.Value) reflect.Value {
	return reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem()
}

// fillNonZero sets v, and every field of a struct v, to a value that is
// not zero.
func fillNonZero(t *testing.T, v reflect.Value, path string) {
	v = exported(v)
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			fillNonZero(t, v.Field(i), path+"."+v.Type().Field(i).Name)
		}
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		v.SetUint(1)
	case reflect.String:
		v.SetString("x")
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
	case reflect.Array:
		for i := range v.Len() {
			fillNonZero(t, v.Index(i), path)
		}
	default:
		t.Fatalf("%s: fillNonZero does not know how to set a %s", path, v.Kind())
	}
}
