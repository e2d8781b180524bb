//! A FIFO queue whose first item is held inline: most body streams pass one chunk at a time,
//! and a queue that never holds more than one never allocates.

use std::collections::VecDeque;

/// A double-ended queue with its front item inline.
#[derive(Debug, Clone)]
pub struct InlineDeque<T> {
    first: Option<T>,
    /// The items after `first`; empty while `first` is `None`.
    rest: VecDeque<T>,
}

impl<T> Default for InlineDeque<T> {
    fn default() -> Self {
        Self {
            first: None,
            rest: VecDeque::new(),
        }
    }
}

impl<T> InlineDeque<T> {
    /// Whether the queue holds nothing.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Items held.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Adds an item at the back.
    pub fn push_back(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    /// Adds an item at the front.
    pub fn push_front(&mut self, item: T) {
        if let Some(old) = self.first.replace(item) {
            self.rest.push_front(old);
        }
    }

    /// Takes the front item.
    pub fn pop_front(&mut self) -> Option<T> {
        let front = self.first.take()?;
        self.first = self.rest.pop_front();
        Some(front)
    }

    /// The front item, to change in place.
    pub fn front_mut(&mut self) -> Option<&mut T> {
        self.first.as_mut()
    }

    /// The items, front to back.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(&self.rest)
    }

    /// Moves every item of `other` to the back of `self`.
    pub fn append(&mut self, other: &mut InlineDeque<T>) {
        if self.is_empty() {
            std::mem::swap(self, other);
            return;
        }
        while let Some(item) = other.pop_front() {
            self.push_back(item);
        }
    }
}

impl<T> IntoIterator for InlineDeque<T> {
    type Item = T;
    type IntoIter =
        std::iter::Chain<std::option::IntoIter<T>, std::collections::vec_deque::IntoIter<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_fifo_order_across_the_inline_front() {
        let mut q = InlineDeque::default();
        assert!(q.is_empty() && q.pop_front().is_none());
        q.push_back(2);
        q.push_back(3);
        q.push_front(1);
        assert_eq!(q.len(), 3);
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(q.pop_front(), Some(1));
        *q.front_mut().unwrap() = 20;
        let mut other = InlineDeque::default();
        other.push_back(4);
        q.append(&mut other);
        assert!(other.is_empty());
        let mut empty = InlineDeque::default();
        empty.append(&mut q);
        assert_eq!(empty.into_iter().collect::<Vec<_>>(), [20, 3, 4]);
    }
}
