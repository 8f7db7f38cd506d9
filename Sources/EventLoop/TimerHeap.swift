/// A binary min-heap of deadlines. Cancellation is lazy: a cancelled entry stays in the heap
/// and is skipped when it surfaces, which keeps cancel O(1) on the request path.
struct TimerHeap {
    struct Entry {
        var deadline: UInt64
        var id: UInt64
    }
    private var heap: [Entry] = []

    var isEmpty: Bool { heap.isEmpty }
    var count: Int { heap.count }
    var earliest: Entry? { heap.first }

    mutating func push(_ e: Entry) {
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if heap[p].deadline <= heap[i].deadline { break }
            heap.swapAt(p, i)
            i = p
        }
    }

    mutating func pop() -> Entry? {
        guard !heap.isEmpty else { return nil }
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            let n = heap.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && heap[l].deadline < heap[m].deadline { m = l }
                if r < n && heap[r].deadline < heap[m].deadline { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
